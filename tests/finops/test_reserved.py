"""Reserved capacity (PTU, issue 17): the fixed cost booked pro rata per accounting interval,
utilisation, spill-over and the break-even utilisation (pure, no server)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.finops.pricing import NANO, Charge
from services.finops.reserved import (
    break_even_utilisation,
    fixed_bookings,
    fixed_cost_nanos,
    reserved_use,
)
from services.runtime.settings import DEFAULT_CONFIG, PlatformConfig, load_config
from tests.finops.helpers import usage

BERLIN = ZoneInfo("Europe/Berlin")
PRICE = 2_000.0  # per month


def ptu_config(price: float = PRICE, tpm: int = 1_000) -> PlatformConfig:
    """The default config plus a reserved route ``api-ptu`` of the API's class."""
    raw = load_config(DEFAULT_CONFIG).model_dump(by_alias=True)
    api = next(r for r in raw["routes"] if r["name"] == "api-gpt52")
    raw["routes"].append({**api, "name": "api-ptu"})
    deployment = next(d for d in raw["deployments"] if d["name"] == "api-gpt52-1")
    raw["deployments"].append({**deployment, "name": "api-ptu-1", "route": "api-ptu", "input_price_per_1k": 0.0,
                               "output_price_per_1k": 0.0, "tokens_per_minute": tpm,
                               "reserved": {"monthly_price": price, "payg_input_price_per_1k": 0.002,
                                            "payg_output_price_per_1k": 0.008}})
    raw["allow_plaintext_secrets"] = True
    return PlatformConfig.model_validate(raw)


def test_a_whole_month_books_exactly_the_monthly_price_hour_by_hour() -> None:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    bookings = fixed_bookings(PRICE, start, end, UTC)
    assert len(bookings) == 30 * 24
    assert sum(n for _, n in bookings) == PRICE * NANO
    # Pro rata: every hour of a 30-day month books 1/720 of the price (± one nano of rounding).
    assert {n for _, n in bookings} <= {math.floor(PRICE * NANO / 720), math.ceil(PRICE * NANO / 720)}


def test_months_begin_in_the_finops_timezone_and_a_dst_month_has_743_hours() -> None:
    start = datetime(2026, 3, 1, tzinfo=BERLIN)
    end = datetime(2026, 4, 1, tzinfo=BERLIN)
    bookings = fixed_bookings(PRICE, start, end, BERLIN)
    assert len(bookings) == 31 * 24 - 1
    assert sum(n for _, n in bookings) == PRICE * NANO
    # Half of February (28 days) is half its price, not half of a 30-day month.
    feb = datetime(2026, 2, 1, tzinfo=BERLIN)
    assert fixed_cost_nanos(PRICE, feb, feb + timedelta(days=14), BERLIN) == PRICE * NANO / 2


@settings(deadline=None, max_examples=60)
@given(
    st.integers(min_value=0, max_value=90 * 24 * 3600),
    st.integers(min_value=0, max_value=90 * 24 * 3600),
    st.integers(min_value=0, max_value=90 * 24 * 3600),
    st.sampled_from([timedelta(minutes=17), timedelta(hours=1), timedelta(days=1)]),
    st.floats(min_value=1.0, max_value=1e6),
)
def test_bookings_add_up_whatever_the_split_and_the_interval(a: int, b: int, c: int, interval: timedelta,
                                                            price: float) -> None:
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    t0, t1, t2 = (origin + timedelta(seconds=s) for s in sorted((a, b, c)))
    whole = sum(n for _, n in fixed_bookings(price, t0, t2, BERLIN, interval))
    parts = (sum(n for _, n in fixed_bookings(price, t0, t1, BERLIN, interval))
             + sum(n for _, n in fixed_bookings(price, t1, t2, BERLIN, timedelta(hours=1))))
    assert whole == parts == fixed_cost_nanos(price, t0, t2, BERLIN)
    assert all(n >= 0 for _, n in fixed_bookings(price, t0, t2, BERLIN, interval))


def test_break_even_is_the_fixed_price_over_pay_as_you_go_at_full_capacity() -> None:
    # 2,000 a month for 1,000 tokens/min over 30 days = 43.2 M tokens; pay-as-you-go at
    # 0.02 per 1k would charge 864 for all of them: the reservation cannot pay off (u* > 1).
    capacity = 1_000 * 60 * 24 * 30
    assert break_even_utilisation(2_000 * NANO, capacity, 0.02 / 1000 * NANO) == pytest.approx(2_000 / 864)
    # At 0.1 per 1k: 4,320 at full capacity, break-even at 46.3 %.
    assert break_even_utilisation(2_000 * NANO, capacity, 0.1 / 1000 * NANO) == pytest.approx(2_000 / 4_320)
    assert break_even_utilisation(2_000 * NANO, 0, 1.0) is None


def test_reserved_use_books_utilisation_payg_equivalent_and_the_spill_over() -> None:
    config = ptu_config(price=300.0, tpm=1_000)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(days=1)  # 1/30 of the month: fixed 10.00; capacity 1.44 M tokens
    noon = start + timedelta(hours=12)
    served = [(usage(i, route="api-ptu", deployment="api-ptu-1", prompt=30_000, completion=10_000, cost=0.0, at=noon),
               Charge(0, 0, "deployment")) for i in range(18)]  # 720,000 tokens: 50 %
    spilled = usage(99, route="api-gpt52", deployment="api-gpt52-1", prompt=1_000, completion=1_000, at=noon)
    spilled = msgspec.structs.replace(spilled, spillover_from="api-ptu")
    later = usage(100, route="api-ptu", deployment="api-ptu-1", at=end + timedelta(hours=1))  # outside
    items = [*served, (spilled, Charge(11_250_000, 0, "deployment")), (later, Charge(0, 0, "deployment"))]

    [use] = reserved_use(config, items, start, end, UTC)
    assert use.intervals == 24 and use.fixed_nanos == 10 * NANO
    assert use.requests == 18 and use.tokens == 720_000
    assert use.capacity_tokens == 1_440_000 and use.utilisation == pytest.approx(0.5)
    # Pay-as-you-go for the same tokens: 540k × 0.002/1k + 180k × 0.008/1k = 1.08 + 1.44.
    assert use.payg_equivalent_nanos == round(2.52 * NANO)
    assert use.savings_nanos == round(2.52 * NANO) - 10 * NANO
    # Break-even: 10.00 / (1.44 M × 2.52 / 720k per token) = 10 / 5.04.
    assert use.break_even == pytest.approx(10 / 5.04)
    assert (use.spill_requests, use.spill_tokens, use.spill_cost_nanos) == (1, 2_000, 11_250_000)
    assert use.spill_by_deployment == {"api-gpt52-1": 1}
    assert use.as_dict()["spillover"]["requests"] == 1


def test_a_reserved_deployment_needs_its_throughput() -> None:
    raw = ptu_config().model_dump(by_alias=True)
    next(d for d in raw["deployments"] if d["name"] == "api-ptu-1")["tokens_per_minute"] = None
    with pytest.raises(ValidationError, match="need tokens_per_minute"):
        PlatformConfig.model_validate(raw)


def test_the_policy_catalogue_marks_the_reserved_route() -> None:
    from services.router.decision import route_catalogue

    entries = {e.name: e for e in route_catalogue(ptu_config())}
    assert entries["api-ptu"].reserved and not entries["api-gpt52"].reserved


def test_the_report_shows_reservations_and_adds_their_fixed_cost() -> None:
    from rich.console import Console

    from services.finops.report import Period, aggregate, render_table

    config = ptu_config(price=300.0)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(days=1)
    items = [(usage(1, route="api-ptu", deployment="api-ptu-1", at=start + timedelta(hours=1)), Charge(0, 0, "deployment"))]
    report = aggregate(items, by="route", period=Period("d", start, end), currency="EUR", local_deployments=set())
    report.reserved = reserved_use(config, items, start, end, UTC)
    document = report.as_dict()
    assert document["fixed_cost"] == 10.0 and document["total_cost"] == pytest.approx(report.total.cost + 10.0)
    console = Console(record=True, width=200)
    render_table(report, console)
    text = console.export_text()
    assert "Reserved capacity (PTU)" in text and "break-even" in text and "fixed cost 10.00" in text
