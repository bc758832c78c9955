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

The core (``decide``, ``plan``, ``estimate_tokens`` over the kernel's ``gcra``) is pure; ``KvRateLimiter`` is
the thin KV adapter; ``check`` is what the gateway calls. Replicas share a wall clock: skew
between them of δ seconds shifts a limit by at most δ·rate.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import nats.errors
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
CAS_ATTEMPTS: Final = 64


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
            for attempt in range(CAS_ATTEMPTS):
                known = self._known.get(kv_key)
                state, revision = known if known is not None else await self._read(kv_key)
                new, refusal = decide(state, checks, self.clock())
                if refusal is not None and known is not None:
                    self._known.pop(kv_key, None)  # refuse only on fresh state (refunds lower it)
                    continue
                if refusal is not None:
                    return refusal
                if await self._write(kv_key, new, revision):
                    return None
                await asyncio.sleep(random.uniform(0, 0.001) * min(attempt + 1, 8))  # another replica won
        return Refusal("limiter", "unavailable", 1.0, 0.0, status=503, code="overloaded")

    async def _refund(self, kv_key: str, checks: Sequence[Check]) -> None:
        async with self._lock(kv_key):
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


_limiters: weakref.WeakKeyDictionary[JetStreamContext, KvRateLimiter] = weakref.WeakKeyDictionary()


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
