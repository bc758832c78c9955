"""Reserved capacity (PTU, issue 17): fixed cost booked pro rata, utilisation, spill-over and
the break-even utilisation against pay-as-you-go. Pure; docs/finops.md "Reserved capacity".

A reservation costs ``monthly_price`` per calendar month (in the FinOps timezone) whether it is
used or not. It is booked per accounting interval (an hour by default; intervals never cross a
month boundary): an interval of length ``t`` in a month of length ``M`` books
``monthly_price × t / M``. Amounts are integer nano-units, rounded *cumulatively* within the
month (each interval books ``round(P·b/M) − round(P·a/M)``), so the intervals of a whole
month add up to exactly the monthly price whatever the interval length.

Break-even: the reservation's capacity in a period is ``tokens_per_minute × seconds / window``;
pay-as-you-go would charge ``p`` per token (the reservation's pay-as-you-go prices at the mix
of prompt and completion tokens it served; without traffic the mean of both prices). The
reservation pays off above the utilisation ``u* = fixed cost / (capacity × p)``; at ``u*``
both cost the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

from schemas.events import UsageRecorded
from services.finops.pricing import NANO, Charge
from services.runtime.settings import Deployment, PlatformConfig

ACCOUNTING_INTERVAL: Final = timedelta(hours=1)
_US: Final = timedelta(microseconds=1)


def month_start(moment: datetime, tz: tzinfo) -> datetime:
    local = moment.astimezone(tz)
    return datetime(local.year, local.month, 1, tzinfo=tz)


def next_month(start: datetime, tz: tzinfo) -> datetime:
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=tz)


def _booked_until(price_nanos: int, month: datetime, month_end: datetime, moment: datetime) -> int:
    """What the month has booked from its start up to ``moment`` (cumulative rounding)."""
    return round(price_nanos * ((moment - month) // _US) / ((month_end - month) // _US))


def fixed_bookings(monthly_price: float, start: datetime, end: datetime, tz: tzinfo,
                   interval: timedelta = ACCOUNTING_INTERVAL) -> list[tuple[datetime, int]]:
    """The fixed cost of [start, end) as (interval start, nanos) per accounting interval."""
    price_nanos = round(monthly_price * NANO)
    bookings: list[tuple[datetime, int]] = []
    # Months begin in the FinOps timezone; lengths are measured in UTC (a DST month is an hour
    # shorter or longer, and aware datetimes of one zone subtract by wall clock).
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    local_month = month_start(start, tz)
    while (month := local_month.astimezone(UTC)) < end:
        local_month = next_month(local_month, tz)
        month_end = local_month.astimezone(UTC)
        at = max(start, month)
        while at < min(end, month_end):
            until = min(at + interval, end, month_end)
            nanos = (_booked_until(price_nanos, month, month_end, until)
                     - _booked_until(price_nanos, month, month_end, at))
            bookings.append((at, nanos))
            at = until
    return bookings


def fixed_cost_nanos(monthly_price: float, start: datetime, end: datetime, tz: tzinfo) -> int:
    return sum(nanos for _, nanos in fixed_bookings(monthly_price, start, end, tz))


def break_even_utilisation(fixed_nanos: int, capacity_tokens: float, payg_nanos_per_token: float) -> float | None:
    """The utilisation at which pay-as-you-go for the same tokens costs the fixed price
    (above 1: the reservation cannot pay off in this period). None without capacity or price."""
    at_full = capacity_tokens * payg_nanos_per_token
    return fixed_nanos / at_full if at_full > 0 else None


@dataclass
class ReservedUse:
    """One reserved deployment over a period: what it cost, what it served, what spilled over."""

    deployment: str
    route: str
    monthly_price: float
    tokens_per_minute: int
    window_s: float
    payg_input_per_1k: float
    payg_output_per_1k: float
    seconds: float = 0.0
    intervals: int = 0
    fixed_nanos: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spill_requests: int = 0
    spill_tokens: int = 0
    spill_cost_nanos: int = 0
    spill_by_deployment: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def capacity_tokens(self) -> float:
        return self.tokens_per_minute * self.seconds / self.window_s

    @property
    def utilisation(self) -> float | None:
        return self.tokens / self.capacity_tokens if self.capacity_tokens else None

    @property
    def payg_equivalent_nanos(self) -> int:
        """What the tokens it served would have cost pay-as-you-go."""
        return round((self.prompt_tokens * self.payg_input_per_1k
                      + self.completion_tokens * self.payg_output_per_1k) / 1000 * NANO)

    @property
    def payg_nanos_per_token(self) -> float:
        if self.tokens:
            return self.payg_equivalent_nanos / self.tokens
        return (self.payg_input_per_1k + self.payg_output_per_1k) / 2 / 1000 * NANO

    @property
    def break_even(self) -> float | None:
        return break_even_utilisation(self.fixed_nanos, self.capacity_tokens, self.payg_nanos_per_token)

    @property
    def savings_nanos(self) -> int:
        """Pay-as-you-go for the same tokens minus the fixed cost (negative: it did not pay off)."""
        return self.payg_equivalent_nanos - self.fixed_nanos

    def as_dict(self) -> dict[str, Any]:
        utilisation, break_even = self.utilisation, self.break_even
        return {
            "deployment": self.deployment, "route": self.route, "monthly_price": self.monthly_price,
            "tokens_per_minute": self.tokens_per_minute, "accounting_intervals": self.intervals,
            "fixed_cost": self.fixed_nanos / NANO, "requests": self.requests, "tokens": self.tokens,
            "capacity_tokens": round(self.capacity_tokens),
            "utilisation": None if utilisation is None else round(utilisation, 6),
            "payg_equivalent": self.payg_equivalent_nanos / NANO,
            "break_even_utilisation": None if break_even is None else round(break_even, 6),
            "savings": self.savings_nanos / NANO,
            "spillover": {"requests": self.spill_requests, "tokens": self.spill_tokens,
                          "cost": self.spill_cost_nanos / NANO, "by_deployment": dict(sorted(self.spill_by_deployment.items()))},
        }


def reserved_deployments(config: PlatformConfig) -> list[Deployment]:
    return [d for d in config.deployments if d.reserved is not None]


def reserved_use(config: PlatformConfig, items: Iterable[tuple[UsageRecorded, Charge]], start: datetime,
                 end: datetime, tz: tzinfo, interval: timedelta = ACCOUNTING_INTERVAL) -> list[ReservedUse]:
    """Per reserved deployment over [start, end) (the caller clips ``end`` to now: nothing is
    booked ahead): fixed cost, tokens served, spill-over of its route to pay-as-you-go."""
    uses: dict[str, ReservedUse] = {}
    for d in reserved_deployments(config):
        assert d.reserved is not None and d.tokens_per_minute  # the config validates both
        bookings = fixed_bookings(d.reserved.monthly_price, start, end, tz, interval) if end > start else []
        uses[d.name] = ReservedUse(
            deployment=d.name, route=d.route, monthly_price=d.reserved.monthly_price,
            tokens_per_minute=d.tokens_per_minute, window_s=d.quota_window_s,
            payg_input_per_1k=d.reserved.payg_input_price_per_1k,
            payg_output_per_1k=d.reserved.payg_output_price_per_1k,
            seconds=max(0.0, (end - start).total_seconds()), intervals=len(bookings),
            fixed_nanos=sum(n for _, n in bookings),
        )
    by_route: dict[str, list[ReservedUse]] = {}
    for use in uses.values():
        by_route.setdefault(use.route, []).append(use)
    for usage, charge in items:
        if not start <= usage.occurred_at < end:
            continue
        served = uses.get(usage.deployment)
        if served is not None:
            served.requests += 1
            served.prompt_tokens += usage.usage.prompt_tokens
            served.completion_tokens += usage.usage.completion_tokens
        if usage.spillover_from and usage.spillover_from in by_route:
            # A route's spill-over is shown once, with its first reserved deployment.
            first = by_route[usage.spillover_from][0]
            first.spill_requests += 1
            first.spill_tokens += usage.usage.total_tokens
            first.spill_cost_nanos += charge.cost_nanos
            first.spill_by_deployment[usage.deployment] = first.spill_by_deployment.get(usage.deployment, 0) + 1
    return sorted(uses.values(), key=lambda u: u.deployment)
