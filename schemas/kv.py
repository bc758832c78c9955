"""Values of the KV buckets (DESIGN.md §3), typed once: writers and readers share these.

Key layout
- ``budgets``:         ``totals.<scope>.<id>`` → running totals (finops' own bookkeeping)
                       ``state.<scope>.<id>``  → ``BudgetState`` (what the router enforces)
- ``provider_health``: ``<route>.<worker_id>`` → ``ProviderHealthState`` (one per inference worker)
- ``capacity``:        ``<deployment>``        → ``CapacityState`` (from the vLLM /metrics)
                       ``quota.<route>``       → ``QuotaState`` (tokens per quota window of external APIs)
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.events import utcnow
from schemas.vocabulary import Ident, ProviderHealth, Route, Timestamp

BudgetScope = Literal["tenant", "business_unit", "usecase", "endpoint"]
BudgetPeriod = Literal["day", "month"]
BudgetLevel = Literal["ok", "warn", "exhausted"]
BudgetAction = Literal["none", "downgrade", "force_local", "block_noncritical"]


class BudgetState(msgspec.Struct, kw_only=True):
    budget_id: Ident
    scope: BudgetScope
    scope_id: Ident
    period: BudgetPeriod
    period_start: Timestamp
    limit: float
    consumed: float
    currency: Ident = "EUR"
    level: BudgetLevel = "ok"
    action: BudgetAction = "none"  # the action in force now (``none`` until a threshold acts)
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)


class ProviderHealthState(msgspec.Struct, kw_only=True):
    route: Route
    worker_id: Ident
    state: ProviderHealth
    consecutive_failures: int = 0
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)


class CapacityState(msgspec.Struct, kw_only=True):
    deployment: Ident
    route: Route
    requests_running: float
    requests_waiting: float
    kv_cache_usage: float
    ok: bool
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)


class QuotaState(msgspec.Struct, kw_only=True):
    route: Route
    limit: float  # tokens per window
    used: float
    window: int  # index of the window the count belongs to: epoch seconds // window_s
    window_s: float = 60.0
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used)
