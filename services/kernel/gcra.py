"""Rate-limit math: GCRA (the generic cell rate algorithm, as in ATM networks and redis-cell).

A limit of ``L`` units per ``W`` seconds gives each unit an emission interval ``T = W / L``;
the only state is the *theoretical arrival time* ``TAT``. A request costing ``c`` units is
admitted at time ``now`` iff ``max(TAT, now) + c·T − W ≤ now``, and then
``TAT ← max(TAT, now) + c·T``. The allowance refills continuously; a full window's worth may
arrive at once. A refused request learns exactly when it would fit (``Retry-After``).

Pure: the gateway's limiter (per key, team, endpoint) and the tool gateway's (per agent,
application, user, tool) keep ``LimitState`` documents in KV ``ratelimits`` and decide
with these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


@dataclass(frozen=True, slots=True)
class Rate:
    limit: float  # units per window
    per_s: float  # window

    @property
    def interval(self) -> float:
        return self.per_s / self.limit

    @property
    def tolerance(self) -> float:
        return self.per_s


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    tat: float  # the new TAT if allowed, the unchanged one if not
    retry_after_s: float
    remaining: float  # units that would still be admitted now
    too_large: bool = False  # the request alone exceeds a whole window


def gcra(tat: float, now: float, cost: float, rate: Rate) -> Verdict:
    base = max(tat, now)
    remaining = max(0.0, (rate.tolerance - (base - now)) / rate.interval)
    if cost <= 0:
        return Verdict(True, tat, 0.0, remaining)
    if cost * rate.interval > rate.tolerance:
        return Verdict(False, tat, rate.per_s, remaining, too_large=True)
    new_tat = base + cost * rate.interval
    allow_at = new_tat - rate.tolerance
    if allow_at <= now:
        return Verdict(True, new_tat, 0.0, (rate.tolerance - (new_tat - now)) / rate.interval)
    return Verdict(False, tat, allow_at - now, remaining)


def refund(tat: float, now: float, cost: float, rate: Rate) -> float:
    """Undo a charge (a request admitted here but refused by another limit)."""
    return max(now, tat - cost * rate.interval)


class LimitState(msgspec.Struct, kw_only=True):
    """One limit document (KV ``ratelimits``): the TAT per metric (epoch seconds)."""

    tat: dict[str, float] = msgspec.field(default_factory=dict)
