"""What the console shows, read the way the CLI reads it (no state of its own)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import subjects
from schemas.events import (
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ScreenReply,
    ScreenRequest,
    deadline_in,
    decode,
    encode,
    new_id,
    utcnow,
)
from schemas.streams import KV_APPROVALS
from services.audit.query import Selection
from services.audit.story import Step, story
from services.audit.trail import request_records, verify_stream
from services.finops.replay import read_usage
from services.runtime.settings import PlatformConfig
from services.toolgateway.approval_store import ApprovalStore
from services.toolgateway.approvals import ApprovalRecord
from services.toolgateway.client import decide_approval


@dataclass(frozen=True, slots=True)
class Pending:
    record: ApprovalRecord
    age_s: float
    left_s: float


async def pending_approvals(js: JetStreamContext) -> list[Pending]:
    """Calls waiting for a human, oldest first. The arguments are not read: the page shows
    their shape (paths and JSON types), never values."""
    store = ApprovalStore(await js.key_value(KV_APPROVALS))
    now = utcnow()
    records = sorted((r for r in await store.records() if r.state == "pending"), key=lambda r: r.created_at)
    return [Pending(r, (now - r.created_at).total_seconds(), (r.expires_at - now).total_seconds()) for r in records]


async def decide(nc: Client, approval_id: str, approve: bool, approver: str, reason: str | None) -> ApprovalDecisionReply:
    return await decide_approval(nc, ApprovalDecisionRequested(
        approval_id=approval_id, approve=approve, approver=approver, reason=reason))


@dataclass(slots=True)
class Story:
    request_id: str
    steps: list[Step]
    attributes: dict[str, str]
    chain_ok: bool | None
    chain_records: int = 0


async def request_story(js: JetStreamContext, request_id: str, since_hours: float, tenant: str | None) -> Story | None:
    selection = Selection(since=utcnow() - timedelta(hours=since_hours), tenant=tenant)
    records = await request_records(js, "AUDIT", request_id, selection)
    if not records:
        return None
    first = records[0].event
    report = await verify_stream(js, "AUDIT", partition=records[0].partition)
    return Story(
        request_id=request_id,
        steps=story(records),
        attributes={"tenant": first.tenant, "business_unit": first.business_unit, "role": first.user_role,
                    "usecase": first.usecase_class, "correlation_id": first.correlation_id},
        chain_ok=report.ok,
        chain_records=report.records,
    )


@dataclass(slots=True)
class Spend:
    """Spend and tokens per day and per route, local GPU time beside API cost."""

    days: list[str] = field(default_factory=list)
    cost_by_day: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    tokens_by_day: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_route: dict[str, dict[str, float]] = field(default_factory=dict)
    local_gpu_hours: float = 0.0
    local_cost: float = 0.0
    api_cost: float = 0.0


async def spend(js: JetStreamContext, config: PlatformConfig, days: int = 14) -> Spend:
    tz = ZoneInfo(config.finops_timezone)
    today = datetime.now(tz).date()
    result = Spend(days=[(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)])
    local_routes = {r.name for r in config.routes if r.locality == "local"}
    seen: set[str] = set()
    start = datetime.now(tz) - timedelta(days=days)
    async for _, usage in read_usage(js, start_time=start):
        if usage.call_id in seen:  # a redelivered usage event is booked once, as FinOps does
            continue
        seen.add(usage.call_id)
        day = usage.occurred_at.astimezone(tz).date().isoformat()
        result.cost_by_day[day] += usage.cost
        result.tokens_by_day[day] += usage.usage.total_tokens
        route = result.by_route.setdefault(usage.route, {"requests": 0, "tokens": 0, "cost": 0.0, "gpu_hours": 0.0})
        route["requests"] += 1
        route["tokens"] += usage.usage.total_tokens
        route["cost"] += usage.cost
        route["gpu_hours"] += usage.gpu_seconds / 3600
        if usage.route in local_routes:
            result.local_gpu_hours += usage.gpu_seconds / 3600
            result.local_cost += usage.cost
        else:
            result.api_cost += usage.cost
    return result


async def screen(nc: Client, text: str, direction: str, usecase: str, tenant: str) -> ScreenReply:
    """The running DLP service's verdict on a text (``dlp.screen``): nothing is stored."""
    request = ScreenRequest(
        request_id=new_id(), correlation_id=new_id(), deadline=deadline_in(10), tenant=tenant,
        business_unit="console", user_role="dpo", usecase_class=usecase,  # type: ignore[arg-type]
        direction=direction,  # type: ignore[arg-type]
        texts=[text],
    )
    reply = await nc.request(subjects.DLP_SCREEN, encode(request), timeout=10)
    return decode(reply.data, ScreenReply)


def svg_bars(values: list[float], width: int = 560, height: int = 120) -> str:
    """A bar chart as inline SVG (no script, no CDN); ``values`` left to right."""
    top = max(values) if values and max(values) > 0 else 1.0
    step = width / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        h = round(value / top * (height - 4), 1)
        bars.append(f'<rect x="{i * step + 1:.1f}" y="{height - h:.1f}" width="{step - 2:.1f}" height="{h}"/>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" width="{width}" height="{height}">'
            + "".join(bars) + "</svg>")


def as_rows(items: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted(items.items())
