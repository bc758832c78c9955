"""What the console shows, read the way the CLI reads it (no state of its own)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from schemas import subjects
from schemas.events import (
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    DeadLetter,
    FinopsAlert,
    ScreenReply,
    ScreenRequest,
    deadline_in,
    decode,
    encode,
    new_id,
    utcnow,
)
from schemas.kv import CapacityState, ProviderHealthState, QuotaState
from schemas.streams import CONSUMERS, DLQ, FINOPS, KV_APPROVALS, KV_CAPACITY, KV_PROVIDER_HEALTH
from services.audit.query import Selection
from services.audit.story import Step, story
from services.audit.trail import request_records, verify_stream
from services.finops.replay import read_usage
from services.runtime.settings import PlatformConfig
from services.toolgateway.approval_store import ApprovalStore
from services.toolgateway.approvals import ApprovalRecord
from services.toolgateway.client import decide_approval
from stellwerk.discovery import ping_workers


@dataclass(frozen=True, slots=True)
class Pending:
    record: ApprovalRecord
    age_s: float
    left_s: float


async def pending_approvals(js: JetStreamContext, tenant: str | None) -> list[Pending]:
    """Calls waiting for a human, oldest first — of ``tenant`` only, unless None (operators).
    The arguments are not read: the page shows their shape (paths and JSON types), never values."""
    store = ApprovalStore(await js.key_value(KV_APPROVALS))
    now = utcnow()
    records = sorted((r for r in await store.records()
                      if r.state == "pending" and (tenant is None or r.request.tenant == tenant)),
                     key=lambda r: r.created_at)
    return [Pending(r, (now - r.created_at).total_seconds(), (r.expires_at - now).total_seconds()) for r in records]


async def decide(nc: Client, approval_id: str, approve: bool, approver: str, reason: str | None,
                 tenant: str | None, credential: str | None = None) -> ApprovalDecisionReply:
    """Decide as ``approver`` with the sign-in's ``credential`` (the tool gateway verifies it);
    an approver bound to ``tenant`` decides that tenant's calls only."""
    if tenant is not None:
        store = ApprovalStore(await nc.jetstream().key_value(KV_APPROVALS))
        found = await store.get(approval_id)
        if found is None or found[0].request.tenant != tenant:
            return ApprovalDecisionReply(approval_id=approval_id, accepted=False, reason="not_found")
    return await decide_approval(nc, ApprovalDecisionRequested(
        approval_id=approval_id, approve=approve, approver=approver, reason=reason, credential=credential))


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
        detail=True,  # spans and scores for the playground
    )
    reply = await nc.request(subjects.DLP_SCREEN, encode(request), timeout=10)
    return decode(reply.data, ScreenReply)


def svg_bars(values: list[float], label: str, width: int = 560, height: int = 120) -> str:
    """A bar chart as inline SVG (no script, no CDN); ``values`` left to right."""
    top = max(values) if values and max(values) > 0 else 1.0
    step = width / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        h = round(value / top * (height - 4), 1)
        bars.append(f'<rect x="{i * step + 1:.1f}" y="{height - h:.1f}" width="{step - 2:.1f}" height="{h}"/>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
            f'aria-label="{label}" width="100%" height="{height}"><title>{label}</title>' + "".join(bars) + "</svg>")


def as_rows(items: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted(items.items())


# --- status: workers, consumers, dead letters, alerts -----------------------------------------


@dataclass(slots=True)
class Status:
    workers: dict[str, list[str]]
    consumers: list[dict[str, Any]]
    dead_letters: dict[tuple[str, str], int]
    alerts: list[FinopsAlert]


async def status(nc: Client, recent: int = 200) -> Status:
    js = nc.jetstream()
    workers = await ping_workers(nc, wait_s=0.3)
    consumers = []
    for consumer in CONSUMERS:
        try:
            info = await js.consumer_info(consumer.stream, consumer.durable)
        except Exception:  # noqa: BLE001 - a consumer not yet created shows as absent
            consumers.append({"stream": consumer.stream, "consumer": consumer.durable, "missing": True})
            continue
        consumers.append({"stream": consumer.stream, "consumer": consumer.durable, "missing": False,
                          "pending": info.num_pending or 0, "ack_pending": info.num_ack_pending or 0,
                          "redelivered": info.num_redelivered or 0})
    dead: dict[tuple[str, str], int] = defaultdict(int)
    for raw in await _last(js, DLQ.name, subjects.DLQ_ALL, recent):
        try:
            letter = decode(raw, DeadLetter)
        except (msgspec.DecodeError, msgspec.ValidationError):
            dead[("?", "undecodable")] += 1
            continue
        dead[(letter.service, letter.reason)] += 1
    alerts = []
    for raw in await _last(js, FINOPS.name, subjects.FINOPS_ALERT, 20):
        try:
            alerts.append(decode(raw, FinopsAlert))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return Status(workers=workers, consumers=consumers, dead_letters=dict(dead), alerts=alerts[::-1])


async def _last(js: JetStreamContext, stream: str, subject: str, count: int) -> list[bytes]:
    """The last ``count`` messages of a stream on ``subject`` (oldest first)."""
    try:
        info = await js.stream_info(stream)
    except Exception:  # noqa: BLE001 - no stream yet: nothing to show
        return []
    last = info.state.last_seq or 0
    if last == 0:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True,
                             config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                                   opt_start_seq=max(1, last - count + 1)))
    found: list[bytes] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except TimeoutError:
                return found
            found.append(msg.data)
            if msg.metadata.sequence.stream >= last:
                return found
    finally:
        await sub.unsubscribe()


# --- routing: the policy in force, live signals per route, explain ---------------------------


@dataclass(slots=True)
class RouteSignals:
    health: dict[str, list[ProviderHealthState]]
    capacity: list[CapacityState]
    quota: list[QuotaState]


async def _kv_values(js: JetStreamContext, bucket: str) -> list[tuple[str, bytes]]:
    try:
        kv = await js.key_value(bucket)
        keys = await kv.keys()
    except Exception:  # noqa: BLE001 - an empty or absent bucket has nothing to show
        return []
    values = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except Exception:  # noqa: BLE001 - deleted meanwhile
            continue
        if entry.value:
            values.append((key, entry.value))
    return values


async def route_signals(js: JetStreamContext) -> RouteSignals:
    health: dict[str, list[ProviderHealthState]] = defaultdict(list)
    for _, raw in await _kv_values(js, KV_PROVIDER_HEALTH):
        try:
            state = decode(raw, ProviderHealthState)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        health[state.route].append(state)
    capacity, quota = [], []
    for key, raw in await _kv_values(js, KV_CAPACITY):
        try:
            if key.startswith("quota."):
                quota.append(decode(raw, QuotaState))
            else:
                capacity.append(decode(raw, CapacityState))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return RouteSignals(health=dict(health), capacity=capacity, quota=quota)


def policy_rules(policy_dir: Path) -> list[str]:
    """The rule ids of the routing policy, in the order the policy tries them."""
    rules: list[str] = []
    for path in sorted(policy_dir.glob("*.rego")):
        rules.extend(re.findall(r'"id":\s*"([A-Za-z0-9_.:\-]+)"', path.read_text()))
    return list(dict.fromkeys(rules))
