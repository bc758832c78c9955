"""Running totals per budget key, applied idempotently.

The totals document remembers the ids of the last calls it applied, and the KV write is a
compare-and-set on the revision read — so a redelivered usage event, or two FinOps workers
racing on one key, never count a call twice.
"""

from __future__ import annotations

import msgspec

from schemas import subjects
from schemas.events import UsageRecorded

RECENT_IDS = 4096


class Totals(msgspec.Struct, kw_only=True):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    currency: str = "EUR"
    recent_call_ids: list[str] = msgspec.field(default_factory=list)


def apply_usage(totals: Totals, usage: UsageRecorded) -> bool:
    """Add one call to the totals; return False (and change nothing) if already counted."""
    if usage.call_id in totals.recent_call_ids:
        return False
    totals.requests += 1
    totals.prompt_tokens += usage.usage.prompt_tokens
    totals.completion_tokens += usage.usage.completion_tokens
    totals.gpu_seconds = round(totals.gpu_seconds + usage.gpu_seconds, 6)
    totals.cost = round(totals.cost + usage.cost, 8)
    totals.currency = usage.currency
    totals.recent_call_ids.append(usage.call_id)
    del totals.recent_call_ids[:-RECENT_IDS]
    return True


def budget_keys(usage: UsageRecorded) -> list[str]:
    """The KV keys one call counts against (KV keys allow [-_=/.A-Za-z0-9])."""
    return [f"tenant.{subjects.token(usage.tenant)}"]
