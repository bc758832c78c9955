"""Gateway rate limits shared by every replica: per API key (user), business unit (team) and
addressed model endpoint — requests and tokens per window, state in KV ``ratelimits``.

Algorithm: GCRA (``services.kernel.gcra``, shared with the tool gateway's limiter): the only
state per limit is the *theoretical arrival time*; the allowance refills continuously and a
refused request learns exactly when it would fit (``Retry-After``). One float per limit, so one small
KV document per user / team / endpoint, updated with compare-and-set: several gateway
replicas enforce one limit, and a lost race is simply re-decided on fresh state.

Tokens are charged at admission as an estimate — prompt characters / 4 plus ``max_tokens``
(or ``completion_tokens_estimate`` when absent), as OpenAI's own limiter does — because the
real count exists only after the call.

Leases: a write per limit per request cost about a sixth of the mesh's CPU per request
(three KV compare-and-sets, each a JetStream write). While a document has plenty of
allowance left, a replica therefore reserves a *lease* with the request's charge — 5 % of the
window's allowance, taken only from what lies above 20 % of it — and admits the next requests
from that lease without a KV round trip until it is used up. The lease is charged in KV like
the requests it stands for, so several replicas can never admit more than the limit together;
what a replica reserved and did not use goes back after a second without use (or at
shutdown), so it can delay another replica's requests by at most that long, and only while
the limit is far from reached. Near the limit (and for limits too small for a whole unit of
lease) every request is decided on KV, exactly as before. A replica that dies with a lease
forfeits it: the limit errs towards refusing.

The core (``decide``, ``plan``, ``estimate_tokens``, ``lease_size`` over the kernel's ``gcra``) is
pure; ``KvRateLimiter`` is the thin KV adapter; ``check`` is what the gateway calls. Replicas
share a wall clock: skew between them of δ seconds shifts a limit by at most δ·rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.events import AuditEvent, ChatMessage, RequestSubmitted, encode, envelope_fields
from schemas.streams import KV_RATELIMITS
from services.gateway.settings import RateLimits
from services.kernel.gcra import LimitState, Rate, gcra, refund
from services.kernel.limit_spec import LimitSpec
from services.kernel.tokens import estimate_prompt_tokens
from services.runtime.errors import fixed_message
from services.runtime.kv_docs import read_doc, write_doc
from services.runtime.settings import ApiKey

Metric = Literal["requests", "tokens"]
Scope = Literal["user", "team", "endpoint", "end_user"]
log = structlog.get_logger("stellwerk.gateway")
CAS_ATTEMPTS: Final = 64
LEASE_SHARE: Final = 0.05  # of a limit's window allowance, reserved with one KV write
LEASE_ABOVE: Final = 0.20  # leases only come from the allowance above this share of it
LEASE_IDLE_S: Final = 1.0  # a lease not drawn on for this long goes back to KV


# --- the pure core ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    scope: Scope
    subject: str  # key id, team, endpoint
    metric: Metric
    rate: Rate
    cost: float

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.metric}"


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: Scope | Literal["limiter"]
    metric: Metric | Literal["unavailable"]
    retry_after_s: float
    limit: float
    too_large: bool = False
    status: int = 429
    code: str = "rate_limited"

    @property
    def message(self) -> str:
        if self.code == "rate_limited":
            return fixed_message("rate_limited")
        return "The rate limiter is unavailable; retry shortly."

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.metric}"


def decide(state: LimitState, checks: Sequence[Check], now: float) -> tuple[LimitState, Refusal | None]:
    """All limits of one document at once: admitted only if every one admits."""
    new = dict(state.tat)
    refusals: list[Refusal] = []
    for check in checks:
        verdict = gcra(state.tat.get(check.metric, 0.0), now, check.cost, check.rate)
        if verdict.allowed:
            new[check.metric] = verdict.tat
        else:
            refusals.append(Refusal(check.scope, check.metric, verdict.retry_after_s, check.rate.limit,
                                    verdict.too_large))
    if refusals:
        return state, max(refusals, key=lambda r: r.retry_after_s)
    return LimitState(tat=new), None


def lease_size(state: LimitState, check: Check, now: float) -> float:
    """Whole units to reserve beyond ``check``'s own cost: a share of the window's allowance,
    taken only from what lies above ``LEASE_ABOVE`` of it (0 near the limit)."""
    left = gcra(state.tat.get(check.metric, 0.0), now, 0.0, check.rate).remaining
    spare = left - check.cost - LEASE_ABOVE * check.rate.limit
    return float(max(0, math.floor(min(LEASE_SHARE * check.rate.limit, spare))))


@dataclass(slots=True)
class _Lease:
    """Units of a document this replica has charged in KV and not yet admitted, per metric;
    ``checks``: the document's limits (what the units go back to)."""

    units: dict[Metric, float]
    checks: list[Check]
    used_at: float  # monotonic: when a request last drew on it

    def covers(self, checks: Sequence[Check]) -> bool:
        return all(self.units.get(c.metric, 0.0) >= c.cost for c in checks)


def _spec(table: dict[str, LimitSpec], *names: str) -> LimitSpec | None:
    for name in (*names, "*"):
        if name in table:
            return table[name]
    return None


def plan(
    limits: RateLimits, key: ApiKey, endpoint: str, tokens: int, end_user: str | None = None
) -> dict[str, list[Check]]:
    """The limits one request counts against, by KV document. ``end_user``: the hashed end
    user (``GenerationParams.user``), counted per tenant (issue 14)."""
    docs: dict[str, list[Check]] = {}
    team = f"{key.tenant}.{key.business_unit}"
    subjects_of: list[tuple[Scope, str, str, LimitSpec | None]] = [
        # Per key lineage (issue 14): a rotated key counts on its predecessor's document.
        ("user", key.limit_id, f"user.{subjects.token(key.limit_id)}", _spec(limits.users, key.key_id, key.limit_id)),
        ("team", team, f"team.{subjects.token(key.tenant)}.{subjects.token(key.business_unit)}",
         _spec(limits.teams, team, key.business_unit)),
        ("endpoint", endpoint, f"endpoint.{subjects.token(endpoint)}", _spec(limits.endpoints, endpoint)),
    ]
    if end_user is not None:
        subjects_of.append(("end_user", end_user, f"enduser.{subjects.token(key.tenant)}.{subjects.token(end_user)}",
                            _spec(limits.end_users, key.key_id, key.limit_id, key.tenant)))
    for scope, subject, kv_key, spec in subjects_of:
        if spec is None:
            continue
        checks = []
        if spec.requests:
            checks.append(Check(scope, subject, "requests", Rate(spec.requests, spec.per_s), 1))
        if spec.tokens:
            checks.append(Check(scope, subject, "tokens", Rate(spec.tokens, spec.per_s), tokens))
        if checks:
            docs[kv_key] = checks
    return docs


def estimate_tokens(messages: Sequence[ChatMessage], max_tokens: int | None, completion_estimate: int) -> int:
    """The kernel's cheap prompt estimate (characters / 4, +4 per message) plus the answer's allowance."""
    prompt = estimate_prompt_tokens(m.content for m in messages)
    return prompt + (max_tokens if max_tokens is not None else completion_estimate)


# --- the KV adapter --------------------------------------------------------------------------


class KvRateLimiter:
    def __init__(self, kv: KeyValue, limits: RateLimits, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.limits = limits
        self.clock = clock
        # Requests of one replica for one document queue here instead of racing in KV: only
        # other replicas can make a compare-and-set fail.
        self._locks: dict[str, asyncio.Lock] = {}
        # The last state this replica wrote, with its revision: the next request decides on
        # it and writes with compare-and-set, so a replica that is alone on a document needs
        # one KV round trip per request instead of two. A lost race re-reads (issue 11).
        self._known: dict[str, tuple[LimitState, int]] = {}
        self._leases: dict[str, _Lease] = {}
        self._returner: asyncio.Task[None] | None = None
        # When this replica last charged each document (monotonic): leases only for documents
        # in steady use — for a key seen once a minute, a lease would cost a second write
        # (its return) instead of saving any.
        self._seen: dict[str, float] = {}

    def _lock(self, kv_key: str) -> asyncio.Lock:
        lock = self._locks.get(kv_key)
        if lock is None:
            lock = self._locks[kv_key] = asyncio.Lock()
        return lock

    async def admit(self, key: ApiKey, endpoint: str, tokens: int, end_user: str | None = None) -> Refusal | None:
        docs = plan(self.limits, key, endpoint, tokens, end_user)
        if not docs:
            return None
        outcomes = await asyncio.gather(*(self._charge(kv_key, checks) for kv_key, checks in docs.items()))
        refusals = [r for r in outcomes if r is not None]
        if not refusals:
            return None
        charged = [kv_key for kv_key, r in zip(docs, outcomes, strict=True) if r is None]
        await asyncio.gather(*(self._refund(kv_key, docs[kv_key]) for kv_key in charged))
        return max(refusals, key=lambda r: r.retry_after_s)

    async def _read(self, kv_key: str) -> tuple[LimitState, int | None]:
        return await read_doc(self.kv, kv_key, LimitState, LimitState)

    async def _write(self, kv_key: str, state: LimitState, revision: int | None) -> bool:
        written = await write_doc(self.kv, kv_key, state, revision)
        if written is None:
            self._known.pop(kv_key, None)
            return False
        self._known[kv_key] = (state, written)
        return True

    async def _charge(self, kv_key: str, checks: Sequence[Check]) -> Refusal | None:
        async with self._lock(kv_key):
            hot = self._hot(kv_key)  # recorded on every charge, also those a lease serves
            lease = self._leases.get(kv_key)
            if lease is not None and lease.covers(checks):
                for check in checks:
                    lease.units[check.metric] -= check.cost
                lease.used_at = time.monotonic()
                return None
            held = lease.units if lease is not None else {}
            # What KV must give: the cost beyond what the lease still holds, plus a new lease.
            needed = [replace(c, cost=max(0.0, c.cost - held.get(c.metric, 0.0))) for c in checks]
            for attempt in range(CAS_ATTEMPTS):
                known = self._known.get(kv_key)
                state, revision = known if known is not None else await self._read(kv_key)
                now = self.clock()
                extra: dict[Metric, float] = {c.metric: lease_size(state, c, now) if hot else 0.0 for c in needed}
                new, refusal = decide(state, [replace(c, cost=c.cost + extra[c.metric]) for c in needed], now)
                if refusal is not None and any(extra.values()):
                    extra = dict.fromkeys(extra, 0.0)
                    new, refusal = decide(state, needed, now)
                if refusal is not None and known is not None:
                    self._known.pop(kv_key, None)  # refuse only on fresh state (refunds lower it)
                    continue
                if refusal is not None:
                    return refusal
                if await self._write(kv_key, new, revision):
                    self._keep_lease(kv_key, checks, needed, held, extra)
                    return None
                await asyncio.sleep(random.uniform(0, 0.001) * min(attempt + 1, 8))  # another replica won
        return Refusal("limiter", "unavailable", 1.0, 0.0, status=503, code="overloaded")

    def _hot(self, kv_key: str) -> bool:
        now = time.monotonic()
        last = self._seen.get(kv_key)
        self._seen[kv_key] = now
        if len(self._seen) > 4096:  # forget documents not charged lately
            self._seen = {k: t for k, t in self._seen.items() if now - t < LEASE_IDLE_S}
        return last is not None and now - last < LEASE_IDLE_S

    def _keep_lease(self, kv_key: str, checks: Sequence[Check], needed: Sequence[Check],
                    held: dict[Metric, float], extra: dict[Metric, float]) -> None:
        """After a charge of ``needed`` (+ ``extra``) in KV: what this replica may still admit."""
        units = dict(held)
        for check, charged in zip(checks, needed, strict=True):
            units[check.metric] = held.get(check.metric, 0.0) + charged.cost + extra[check.metric] - check.cost
        if not any(units.values()):
            self._leases.pop(kv_key, None)
            return
        self._leases[kv_key] = _Lease(units, list(checks), time.monotonic())
        if self._returner is None or self._returner.done():
            self._returner = asyncio.create_task(self._return_idle_leases())

    async def _refund(self, kv_key: str, checks: Sequence[Check]) -> None:
        async with self._lock(kv_key):
            lease = self._leases.get(kv_key)
            if lease is not None:  # still charged in KV: it goes back into the lease
                for check in checks:
                    lease.units[check.metric] = lease.units.get(check.metric, 0.0) + check.cost
                return
            await self._refund_locked(kv_key, checks)

    async def _refund_locked(self, kv_key: str, checks: Sequence[Check]) -> None:
        for _ in range(CAS_ATTEMPTS):
            known = self._known.get(kv_key)
            state, revision = known if known is not None else await self._read(kv_key)
            now = self.clock()
            tat = dict(state.tat)
            for check in checks:
                if check.metric in tat:
                    tat[check.metric] = refund(tat[check.metric], now, check.cost, check.rate)
            if await self._write(kv_key, LimitState(tat=tat), revision):
                return

    async def return_leases(self, idle_s: float = 0.0) -> None:
        """Give back to KV what this replica reserved and has not used for ``idle_s``."""
        cutoff = time.monotonic() - idle_s
        for kv_key in [k for k, lease in self._leases.items() if lease.used_at <= cutoff]:
            async with self._lock(kv_key):
                lease = self._leases.get(kv_key)
                if lease is None or lease.used_at > cutoff:
                    continue
                unused = [replace(c, cost=lease.units[c.metric]) for c in lease.checks
                          if lease.units.get(c.metric, 0.0) > 0]
                if unused:
                    await self._refund_locked(kv_key, unused)
                del self._leases[kv_key]

    async def _return_idle_leases(self) -> None:
        while self._leases:
            await asyncio.sleep(LEASE_IDLE_S / 2)
            try:
                await self.return_leases(LEASE_IDLE_S)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                # Kept and tried again: an unreturned lease only delays others' requests.
                log.warning("rate_limit_lease_return_failed", error=type(exc).__name__)

    async def aclose(self) -> None:
        if self._returner is not None:
            self._returner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._returner
        await self.return_leases()


_limiters: weakref.WeakKeyDictionary[JetStreamContext, KvRateLimiter] = weakref.WeakKeyDictionary()


async def return_leases(js: JetStreamContext) -> None:
    """At shutdown: what this replica reserved and did not use goes back to the others."""
    limiter = _limiters.get(js)
    if limiter is not None:
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            await limiter.aclose()


async def check(
    js: JetStreamContext, limits: RateLimits, key: ApiKey, submitted: RequestSubmitted, endpoint: str
) -> Refusal | None:
    """The gateway's admission: None to proceed, else why not and when to retry.

    A refusal is audited (stage ``gateway``, outcome ``rate_limited``). If KV cannot be
    reached the request is refused with 503 — fail closed, like every other guard.
    """
    if not (limits.users or limits.teams or limits.endpoints or limits.end_users):
        return None
    try:
        limiter = _limiters.get(js)
        if limiter is None:
            limiter = _limiters[js] = KvRateLimiter(await js.key_value(KV_RATELIMITS), limits)
        tokens = estimate_tokens(submitted.messages, submitted.params.max_tokens, limits.completion_tokens_estimate)
        refusal = await limiter.admit(key, endpoint, tokens, submitted.end_user)
    except (nats.errors.Error, TimeoutError, OSError):
        return Refusal("limiter", "unavailable", 1.0, 0.0, status=503, code="overloaded")
    if refusal is not None and refusal.code == "rate_limited":
        event = AuditEvent(
            **envelope_fields(submitted),
            stage="gateway",
            outcome="rate_limited",
            reason_code="rate_limited",
            rule_id=f"ratelimit.{refusal.name}",
            attributes={"api_key": key.key_id, "limit": refusal.name, "too_large": str(refusal.too_large).lower()},
        )
        await js.publish(
            subjects.audit("gateway"), encode(event),
            headers={"Nats-Msg-Id": f"audit:{submitted.request_id}:gateway:rate_limited"},
        )
    return refusal
