"""Tool-call rate limits per agent, application, user and tool, shared by every gateway
worker through KV ``ratelimits``.

The algorithm is the shared kernel's GCRA (``services.kernel.gcra``: one theoretical arrival
time per limit, refilled continuously, compare-and-set in KV so several workers enforce one
limit); this module only plans which limits a tool call counts against. Keys live under
``tool.`` so they never meet the gateway's ``user.``/``team.``/``endpoint.`` documents.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import nats.errors
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.events import ToolCallRequested
from services.kernel.gcra import LimitState, Rate, gcra, refund
from services.kernel.limit_spec import LimitSpec
from services.runtime.kv_docs import read_doc, write_doc
from services.toolgateway.settings import ToolRateLimits

Scope = Literal["agent", "application", "user", "tool"]
METRIC: Final = "requests"
CAS_ATTEMPTS: Final = 32


@dataclass(frozen=True, slots=True)
class Check:
    scope: Scope
    kv_key: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: Scope | Literal["unavailable"]
    retry_after_s: float
    limit: float
    too_large: bool = False

    @property
    def rule_id(self) -> str:
        return f"ratelimit.tool.{self.scope}"


class LimiterUnavailable(RuntimeError):
    """KV could not be read or written: the call is refused (fail closed)."""


def application_of(call: ToolCallRequested) -> str:
    """An agent's application; without one, its tenant's business unit stands in."""
    return call.application or f"{call.tenant}.{call.business_unit}"


def _spec(table: dict[str, LimitSpec], name: str) -> LimitSpec | None:
    return table.get(name) or table.get("*")


def plan(limits: ToolRateLimits, call: ToolCallRequested) -> list[Check]:
    """The limits one call counts against (a limit without ``requests`` counts nothing)."""
    tool = f"{call.server}.{call.tool}"
    candidates: list[tuple[Scope, str | None, dict[str, LimitSpec]]] = [
        ("agent", call.agent_id, limits.agents),
        ("application", application_of(call), limits.applications),
        ("user", call.user_id, limits.users),
        ("tool", tool, limits.tools),
    ]
    checks: list[Check] = []
    for scope, subject, table in candidates:
        if subject is None:
            continue
        spec = _spec(table, subject)
        if spec is None or not spec.requests:
            continue
        checks.append(Check(scope, f"tool.{scope}.{subjects.token(subject)}", Rate(spec.requests, spec.per_s)))
    return checks


def charge(state: LimitState, check: Check, now: float) -> tuple[LimitState, Refusal | None]:
    verdict = gcra(state.tat.get(METRIC, 0.0), now, 1.0, check.rate)
    if not verdict.allowed:
        return state, Refusal(check.scope, verdict.retry_after_s, check.rate.limit, verdict.too_large)
    return LimitState(tat={**state.tat, METRIC: verdict.tat}), None


class ToolRateLimiter:
    def __init__(self, kv: KeyValue, limits: ToolRateLimits, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.limits = limits
        self.clock = clock
        # Calls of one worker for one document queue here instead of racing each other in
        # KV: only other workers can make a compare-and-set fail.
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def admit(self, call: ToolCallRequested) -> Refusal | None:
        """Charge every limit of the call; if one refuses, undo the others' charges."""
        checks = plan(self.limits, call)
        if not checks:
            return None
        try:
            outcomes = await asyncio.gather(*(self._charge(c) for c in checks))
            refusals = [r for r in outcomes if r is not None]
            if refusals:
                charged = [c for c, r in zip(checks, outcomes, strict=True) if r is None]
                await asyncio.gather(*(self._refund(c) for c in charged))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise LimiterUnavailable(type(exc).__name__) from exc
        return max(refusals, key=lambda r: r.retry_after_s) if refusals else None

    async def _read(self, key: str) -> tuple[LimitState, int | None]:
        return await read_doc(self.kv, key, LimitState, LimitState)

    async def _write(self, key: str, state: LimitState, revision: int | None) -> bool:
        return await write_doc(self.kv, key, state, revision) is not None

    async def _charge(self, check: Check) -> Refusal | None:
        async with self._lock(check.kv_key):
            return await self._charge_locked(check)

    async def _charge_locked(self, check: Check) -> Refusal | None:
        for attempt in range(CAS_ATTEMPTS):
            state, revision = await self._read(check.kv_key)
            new, refusal = charge(state, check, self.clock())
            if refusal is not None:
                return refusal
            if await self._write(check.kv_key, new, revision):
                return None
            await asyncio.sleep(random.uniform(0, 0.001) * min(attempt + 1, 8))
        return Refusal("unavailable", 1.0, check.rate.limit)

    async def _refund(self, check: Check) -> None:
        async with self._lock(check.kv_key):
            await self._refund_locked(check)

    async def _refund_locked(self, check: Check) -> None:
        for _ in range(CAS_ATTEMPTS):
            state, revision = await self._read(check.kv_key)
            if METRIC not in state.tat:
                return
            tat = refund(state.tat[METRIC], self.clock(), 1.0, check.rate)
            if await self._write(check.kv_key, LimitState(tat={**state.tat, METRIC: tat}), revision):
                return
