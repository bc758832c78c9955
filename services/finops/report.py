"""Cost reports from the USAGE stream: aggregation (pure) and rendering (table, JSON, CSV)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.events import UsageRecorded
from schemas.kv import BudgetState
from services.finops.ledger import Counters
from services.finops.pricing import NANO, Charge
from services.finops.reserved import ReservedUse

Dimension = Literal["usecase", "tenant", "business_unit", "model", "route", "deployment", "user"]
DIMENSIONS: tuple[Dimension, ...] = ("usecase", "tenant", "business_unit", "model", "route", "deployment", "user")
NO_END_USER = "-"  # ``--by user``: calls that named no end user


class Row(Counters, kw_only=True):
    """One report line: the ledger's counters plus the part served by local deployments."""

    key: str
    local_tokens: int = 0
    local_cost_nanos: int = 0

    def add_call(self, usage: UsageRecorded, charge: Charge, local: bool) -> None:
        self.add(usage, charge)
        if local:
            self.local_tokens += usage.usage.total_tokens
            self.local_cost_nanos += charge.cost_nanos

    @property
    def cost_per_1k_tokens(self) -> float | None:
        return self.cost / self.tokens * 1000 if self.tokens else None

    @property
    def gpu_seconds_per_1k_tokens(self) -> float | None:
        return self.gpu_seconds / self.tokens * 1000 if self.tokens else None

    @property
    def local_share(self) -> float | None:
        """Share of tokens served by local (GPU-priced) deployments."""
        return self.local_tokens / self.tokens if self.tokens else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.tokens,
            "gpu_seconds": round(self.gpu_seconds, 6),
            "gpu_seconds_per_1k_tokens": _round(self.gpu_seconds_per_1k_tokens, 6),
            "cost": round(self.cost, 9),
            "cost_per_1k_tokens": _round(self.cost_per_1k_tokens, 9),
            "local_share": _round(self.local_share, 4),
            "api_share": _round(None if self.local_share is None else 1 - self.local_share, 4),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    start: datetime | None  # inclusive
    end: datetime | None  # exclusive

    def contains(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


def _day(d: date, tz: tzinfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def _month(year: int, month: int, tz: tzinfo) -> datetime:
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=tz)


def parse_period(text: str, now: datetime, tz: tzinfo) -> Period:
    """``today``, ``yesterday``, ``month``, ``last-month``, ``7d`` (last n days), ``all``,
    ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DD..YYYY-MM-DD`` (inclusive), in the FinOps timezone."""
    local = now.astimezone(tz)
    today = local.date()
    text = text.strip().lower()
    if text == "all":
        return Period("all", None, None)
    if text == "today":
        return Period(f"{today}", _day(today, tz), _day(today + timedelta(days=1), tz))
    if text == "yesterday":
        y = today - timedelta(days=1)
        return Period(f"{y}", _day(y, tz), _day(today, tz))
    if text in ("month", "this-month"):
        return Period(f"{local:%Y-%m}", _month(local.year, local.month, tz), _month(local.year, local.month + 1, tz))
    if text == "last-month":
        start = _month(local.year, local.month - 1, tz)
        return Period(f"{start:%Y-%m}", start, _month(local.year, local.month, tz))
    if m := re.fullmatch(r"(\d+)d", text):
        start_day = today - timedelta(days=int(m.group(1)) - 1)
        return Period(f"{start_day}..{today}", _day(start_day, tz), _day(today + timedelta(days=1), tz))
    if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, month = int(m.group(1)), int(m.group(2))
        return Period(text, _month(year, month, tz), _month(year, month + 1, tz))
    if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?", text):
        first = date.fromisoformat(m.group(1))
        last = date.fromisoformat(m.group(2)) if m.group(2) else first
        if last < first:
            raise ValueError("period ends before it starts")
        return Period(text, _day(first, tz), _day(last + timedelta(days=1), tz))
    raise ValueError(f"unknown period '{text}'")


def dimension_value(usage: UsageRecorded, by: Dimension) -> str:
    if by == "usecase":
        return usage.usecase_class
    if by == "model":
        return usage.model
    if by == "user":  # issue 14: the end user's pseudonym, within its tenant
        return f"{usage.tenant}/{usage.end_user}" if usage.end_user else NO_END_USER
    value: str = getattr(usage, by)
    return value


@dataclass
class Report:
    by: Dimension
    period: Period
    currency: str
    rows: list[Row]
    total: Row
    deployments: list[Row]  # GPU-seconds per 1k tokens per deployment
    budgets: list[BudgetState] = field(default_factory=list)
    # Reserved capacity (PTU, issue 17): fixed cost, utilisation, break-even, spill-over.
    reserved: list[ReservedUse] = field(default_factory=list)

    @property
    def fixed_cost(self) -> float:
        return sum(r.fixed_nanos for r in self.reserved) / NANO

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "period": {
                "label": self.period.label,
                "start": self.period.start.isoformat() if self.period.start else None,
                "end": self.period.end.isoformat() if self.period.end else None,
            },
            "currency": self.currency,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
            "deployments": [r.as_dict() for r in self.deployments],
            "budgets": [
                {
                    "budget_id": b.budget_id, "scope": b.scope, "scope_id": b.scope_id, "period": b.period,
                    "period_start": b.period_start.isoformat(), "limit": b.limit, "consumed": round(b.consumed, 9),
                    "consumed_pct": round(b.consumed / b.limit * 100, 2) if b.limit else None,
                    "level": b.level, "action": b.action, "currency": b.currency,
                }
                for b in self.budgets
            ],
            "reserved": [r.as_dict() for r in self.reserved],
            # Per-call cost (the rows) plus the reservations' fixed cost of the period.
            "fixed_cost": round(self.fixed_cost, 9),
            "total_cost": round(self.total.cost + self.fixed_cost, 9),
        }


def aggregate(
    items: Iterable[tuple[UsageRecorded, Charge]],
    *,
    by: Dimension,
    period: Period,
    currency: str,
    local_deployments: set[str],
) -> Report:
    """Group the calls of ``period`` (each once: pass them deduplicated) by ``by``."""
    rows: dict[str, Row] = {}
    deployments: dict[str, Row] = {}
    total = Row(key="total")
    for usage, charge in items:
        if not period.contains(usage.occurred_at):
            continue
        local = usage.deployment in local_deployments
        key = dimension_value(usage, by)
        rows.setdefault(key, Row(key=key)).add_call(usage, charge, local)
        deployments.setdefault(usage.deployment, Row(key=usage.deployment)).add_call(usage, charge, local)
        total.add_call(usage, charge, local)
    ordered = sorted(rows.values(), key=lambda r: (-r.cost_nanos, r.key))
    return Report(by, period, currency, ordered, total, sorted(deployments.values(), key=lambda r: r.key))


# --- rendering ---------------------------------------------------------------------------------

_COLUMNS = ("requests", "tokens", "gpu_seconds", "cost", "cost_per_1k_tokens", "local_share")


def _fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def bar(fraction: float, width: int = 20) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def render_table(report: Report, console: Console) -> None:
    title = f"Cost by {report.by} — {report.period.label} ({report.currency})"
    table = Table(title=title, title_justify="left")
    table.add_column(report.by)
    for name in ("requests", "prompt tok", "completion tok", "GPU-s", "cost", "cost / 1k tok", "local", "API"):
        table.add_column(name, justify="right")

    def add(row: Row, style: str | None = None) -> None:
        table.add_row(
            row.key, f"{row.requests:,}", f"{row.prompt_tokens:,}", f"{row.completion_tokens:,}",
            _fmt(row.gpu_seconds, 1), _fmt(row.cost, 4), _fmt(row.cost_per_1k_tokens, 6),
            _fmt_pct(row.local_share), _fmt_pct(None if row.local_share is None else 1 - row.local_share),
            style=style,
        )

    for row in report.rows:
        add(row)
    table.add_section()
    add(report.total, "bold")
    console.print(table)

    deployments = Table(title="GPU-seconds per 1k tokens by deployment", title_justify="left")
    for name, justify in (("deployment", "left"), ("requests", "right"), ("tokens", "right"),
                          ("GPU-s", "right"), ("GPU-s / 1k tok", "right"), ("cost / 1k tok", "right")):
        deployments.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in report.deployments:
        deployments.add_row(row.key, f"{row.requests:,}", f"{row.tokens:,}", _fmt(row.gpu_seconds, 1),
                            _fmt(row.gpu_seconds_per_1k_tokens, 3), _fmt(row.cost_per_1k_tokens, 6))
    console.print(deployments)
    if report.reserved:
        render_reserved(report, console)
    if report.budgets:
        render_budgets(report.budgets, console)


def render_reserved(report: Report, console: Console) -> None:
    table = Table(title=f"Reserved capacity (PTU) — {report.period.label} ({report.currency})", title_justify="left")
    for name in ("deployment", "fixed cost", "tokens", "capacity", "utilisation", "", "break-even",
                 "PAYG equivalent", "savings", "spill-over req", "spill-over cost"):
        table.add_column(name, justify="left" if name in ("deployment", "") else "right")
    for r in report.reserved:
        utilisation, break_even = r.utilisation, r.break_even
        colour = "green" if utilisation is not None and break_even is not None and utilisation >= break_even else "yellow"
        table.add_row(
            r.deployment, _fmt(r.fixed_nanos / NANO, 2), f"{r.tokens:,}", f"{r.capacity_tokens:,.0f}",
            _fmt_pct(utilisation), Text(bar(min(1.0, utilisation or 0.0), 12), style=colour), _fmt_pct(break_even),
            _fmt(r.payg_equivalent_nanos / NANO, 2), _fmt(r.savings_nanos / NANO, 2),
            f"{r.spill_requests:,}", _fmt(r.spill_cost_nanos / NANO, 4),
        )
    console.print(table)
    console.print(f"per-call cost {report.total.cost:,.4f} + fixed cost {report.fixed_cost:,.2f} = "
                  f"{report.total.cost + report.fixed_cost:,.4f} {report.currency}")


def render_budgets(budgets: Sequence[BudgetState], console: Console) -> None:
    currency = budgets[0].currency if budgets else ""
    table = Table(title=f"Budgets, current period ({currency})", title_justify="left")
    for name, justify in (("budget", "left"), ("scope", "left"), ("period", "left"), ("spent", "right"),
                          ("limit", "right"), ("", "left"), ("%", "right"), ("state", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "state")  # type: ignore[arg-type]
    colours = {"ok": "green", "warn": "yellow", "exhausted": "red"}
    for b in budgets:
        fraction = b.consumed / b.limit if b.limit else 0.0
        colour = colours[b.level]
        state = b.level if b.action == "none" else f"{b.level} → {b.action}"
        table.add_row(
            b.budget_id, f"{b.scope}:{b.scope_id}",
            f"{b.period_start:%Y-%m-%d}" if b.period == "day" else f"{b.period_start:%Y-%m}",
            f"{b.consumed:,.2f}", f"{b.limit:,.2f}", Text(bar(fraction, 12), style=colour),
            f"{fraction * 100:.1f}", Text(state, style=colour),
        )
    console.print(table)


def render_csv(report: Report) -> str:
    out = io.StringIO()
    fields = list(Row(key="x").as_dict())
    writer = csv.DictWriter(out, fieldnames=[report.by if f == "key" else f for f in fields], lineterminator="\n")
    writer.writeheader()
    for row in [*report.rows, report.total]:
        data = row.as_dict()
        data[report.by] = data.pop("key")
        writer.writerow({k: "" if v is None else v for k, v in data.items()})
    return out.getvalue()
