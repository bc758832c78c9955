"""Report aggregation and periods (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.finops.pricing import Charge
from services.finops.report import aggregate, bar, parse_period, render_csv
from tests.finops.helpers import usage

TZ = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 1, 0, 30, tzinfo=TZ).astimezone(UTC)  # 23:30 UTC the day before


def test_periods_are_calendar_periods_in_the_finops_timezone() -> None:
    month = parse_period("month", NOW, TZ)
    assert (month.label, month.start, month.end) == (
        "2026-03", datetime(2026, 3, 1, tzinfo=TZ), datetime(2026, 4, 1, tzinfo=TZ))
    assert parse_period("last-month", NOW, TZ).start == datetime(2026, 2, 1, tzinfo=TZ)
    assert parse_period("today", NOW, TZ).label == "2026-03-01"
    assert parse_period("yesterday", NOW, TZ).label == "2026-02-28"
    week = parse_period("7d", NOW, TZ)
    assert (week.start, week.end) == (datetime(2026, 2, 23, tzinfo=TZ), datetime(2026, 3, 2, tzinfo=TZ))
    span = parse_period("2026-01-30..2026-02-02", NOW, TZ)
    assert span.end is not None and span.start is not None and span.end - span.start == timedelta(days=4)
    assert parse_period("2025-12", NOW, TZ).end == datetime(2026, 1, 1, tzinfo=TZ)
    assert parse_period("all", NOW, TZ).contains(datetime(1999, 1, 1, tzinfo=UTC))
    for bad in ("fortnight", "2026-13-45", "2026-02-02..2026-01-01"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is the user's
            parse_period(bad, NOW, TZ)


def test_rows_totals_and_shares() -> None:
    inside = datetime(2026, 3, 1, 12, tzinfo=TZ)
    items = [
        (usage(1, usecase="chat", at=inside), Charge(10_000_000, 0, "price_table")),
        (usage(2, usecase="coding", route="local-vllm", deployment="local-vllm-1", at=inside),
         Charge(2_000_000, 4_000_000, "price_table")),
        (usage(3, usecase="chat", at=inside - timedelta(days=40)), Charge(99, 0, "price_table")),
    ]
    report = aggregate(items, by="usecase", period=parse_period("month", NOW, TZ), currency="EUR",
                       local_deployments={"local-vllm-1"})
    assert [r.key for r in report.rows] == ["chat", "coding"]  # by cost, descending
    assert report.total.requests == 2 and report.total.cost == pytest.approx(0.012)
    assert report.total.local_share == pytest.approx(0.5)
    local = next(d for d in report.deployments if d.key == "local-vllm-1")
    assert local.gpu_seconds_per_1k_tokens == pytest.approx(2.0)
    assert report.rows[0].cost_per_1k_tokens == pytest.approx(0.005)
    csv = render_csv(report).splitlines()
    assert csv[0].startswith("usecase,requests") and csv[-1].startswith("total,2,")


def test_bar() -> None:
    assert bar(0.5, 10) == "█████░░░░░"
    assert bar(1.7, 4) == "████" and bar(-1, 4) == "░░░░"
