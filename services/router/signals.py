"""Runtime signals for routing, assembled from the KV buckets other services write.

The router never waits for these on the request path: watchers apply each KV update to a
``SignalBoard`` as it arrives, and a request reads whatever the board holds. Entries carry
their write time; a health or capacity report older than ``stale_after_s`` is ignored, so a
crashed inference worker cannot pin a route as "down" (or "ok") forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import msgspec

from schemas import subjects
from schemas.events import RuntimeSignals, utcnow
from schemas.kv import BudgetState, CapacityState, ProviderHealthState, QuotaState
from schemas.vocabulary import ProviderHealth, Route
from services.router.decision import RouteEntry, route_catalogue
from services.runtime.settings import PlatformConfig

_SEVERITY: dict[ProviderHealth, int] = {"healthy": 0, "degraded": 1, "down": 2}
UNLIMITED = 1e12


@dataclass
class SignalBoard:
    config: PlatformConfig
    stale_after_s: float = 60.0
    health: dict[str, ProviderHealthState] = field(default_factory=dict)
    capacity: dict[str, CapacityState] = field(default_factory=dict)
    quota: dict[str, QuotaState] = field(default_factory=dict)
    budgets: dict[str, BudgetState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._local_routes = [r.name for r in self.config.routes if r.locality == "local"]
        self._external_routes = [r.name for r in self.config.routes if r.locality == "external"]
        external = set(self._external_routes)
        self._api_endpoints = external | {d.name for d in self.config.deployments if d.route in external}
        self._catalogue = route_catalogue(self.config)

    # --- applying KV updates (value None = key deleted or purged) -------------------------

    def apply_health(self, key: str, value: bytes | None) -> None:
        _apply(self.health, key, value, ProviderHealthState)

    def apply_capacity(self, key: str, value: bytes | None) -> None:
        if key.startswith("quota."):
            _apply(self.quota, key.removeprefix("quota."), value, QuotaState)
        else:
            _apply(self.capacity, key, value, CapacityState)

    def apply_budget(self, key: str, value: bytes | None) -> None:
        if key.startswith("state."):
            _apply(self.budgets, key.removeprefix("state."), value, BudgetState)

    # --- reading ----------------------------------------------------------------------------

    def signals_for(
        self, tenant: str, business_unit: str, usecase: str, now: datetime | None = None, end_user: str | None = None
    ) -> RuntimeSignals:
        now = now or utcnow()
        fresh_after = now - timedelta(seconds=self.stale_after_s)
        worst: dict[Route, ProviderHealth] = {}
        for state in self.health.values():
            if (
                state.updated_at >= fresh_after
                and _SEVERITY[state.state] > _SEVERITY[worst.get(state.route, "healthy")]
            ):
                worst[state.route] = state.state
        capacity = self._capacity_ok(fresh_after)
        quota = {route: self._quota_remaining(route, now) for route in self._external_routes}
        return RuntimeSignals(
            # Per route in routes_for(); here: whether any local route has room, and the
            # largest quota any external route has left.
            local_capacity_ok=not capacity or any(capacity.values()),
            api_quota_remaining=max(quota.values(), default=UNLIMITED),
            provider_health={r.name: worst.get(r.name, "healthy") for r in self.config.routes},
            budget_exhausted=any(
                b.action == "force_local" for b in self._budgets_of(tenant, business_unit, usecase, end_user)
            ),
            budget_actions=sorted(
                {b.action for b in self._budgets_of(tenant, business_unit, usecase, end_user) if b.action != "none"}
            ),
        )

    def routes_for(self, now: datetime | None = None) -> list[RouteEntry]:
        """The route catalogue for the policy, each route with its own capacity (local) or
        API quota (external) now; health comes with the signals (``provider_health``)."""
        now = now or utcnow()
        capacity = self._capacity_ok(now - timedelta(seconds=self.stale_after_s))
        entries: list[RouteEntry] = []
        for entry in self._catalogue:
            if entry.reserved:  # PTU: room while its reserved throughput lasts this window
                ok = self._quota_remaining(entry.name, now) > 0
                entries.append(entry if ok else msgspec.structs.replace(entry, quota_ok=False))
            elif entry.locality == "local":
                ok = capacity.get(entry.name, True)
                entries.append(entry if ok else msgspec.structs.replace(entry, capacity_ok=False))
            else:
                ok = self._quota_remaining(entry.name, now) > 0
                entries.append(entry if ok else msgspec.structs.replace(entry, quota_ok=False))
        return entries

    def _capacity_ok(self, fresh_after: datetime) -> dict[Route, bool]:
        """Per local route with fresh capacity reports: whether any deployment has room.
        Unknown capacity counts as available: the breaker catches a deployment that fails."""
        reports: dict[Route, list[bool]] = {}
        local = set(self._local_routes)
        for c in self.capacity.values():
            if c.route in local and c.updated_at >= fresh_after:
                reports.setdefault(c.route, []).append(c.ok)
        return {route: any(oks) for route, oks in reports.items()}

    def _quota_remaining(self, route: Route, now: datetime) -> float:
        configured = float(sum(d.tokens_per_minute or 0 for d in self.config.deployments_for(route)))
        state = self.quota.get(route)
        if state is None or state.window != int(now.timestamp() // state.window_s):
            return configured or UNLIMITED  # nothing counted in the current window yet
        # Without a configured quota, the provider's reported limit is the one that applies.
        return max(0.0, (configured or state.limit) - state.used)

    def _budgets_of(self, tenant: str, business_unit: str, usecase: str, end_user: str | None) -> list[BudgetState]:
        wanted = {
            *((("end_user", subjects.token(end_user)),) if end_user else ()),  # issue 14: per end user
            ("tenant", subjects.token(tenant)),
            ("business_unit", subjects.token(business_unit)),
            ("usecase", subjects.token(usecase)),
            # A spent budget of the paid endpoint applies to every request that could use it.
            *(("endpoint", subjects.token(name)) for name in self._api_endpoints),
        }
        return [b for b in self.budgets.values() if (b.scope, subjects.token(b.scope_id)) in wanted]


S = TypeVar("S", bound=msgspec.Struct)


def _apply(table: dict[str, S], key: str, value: bytes | None, type_: type[S]) -> None:
    if not value:
        table.pop(key, None)
        return
    try:
        table[key] = msgspec.json.decode(value, type=type_)
    except msgspec.DecodeError:
        table.pop(key, None)  # a malformed entry is no signal; it must not crash routing
