"""FinOps worker contract.

consumes  stellwerk.v1.usage.recorded  (durable ``finops`` on the USAGE stream)
writes    KV ``budgets``               (totals per tenant; compare-and-set, idempotent per call)
"""

from __future__ import annotations

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from schemas.events import UsageRecorded
from schemas.streams import FINOPS_USAGE, KV_BUDGETS
from services.finops.ledger import Totals, apply_usage, budget_keys
from services.runtime.worker import Worker

_CAS_ATTEMPTS = 20


async def add_to_totals(kv: KeyValue, key: str, usage: UsageRecorded) -> bool:
    """Apply one usage event to one key with optimistic concurrency; True if it counted."""
    for _ in range(_CAS_ATTEMPTS):
        try:
            entry = await kv.get(key)
            totals = msgspec.json.decode(entry.value or b"{}", type=Totals)
            revision: int | None = entry.revision
        except KeyNotFoundError:
            totals, revision = Totals(), None
        if not apply_usage(totals, usage):
            return False
        data = msgspec.json.encode(totals)
        try:
            if revision is None:
                await kv.create(key, data)
            else:
                await kv.update(key, data, last=revision)
            return True
        except KeyWrongLastSequenceError:
            continue
    raise RuntimeError("budget update contention")


def build(worker: Worker) -> None:
    async def on_usage(event: UsageRecorded) -> None:
        budgets = await worker.kv(KV_BUDGETS)
        for key in budget_keys(event):
            await add_to_totals(budgets, key, event)

    worker.consume(FINOPS_USAGE, UsageRecorded, on_usage)
