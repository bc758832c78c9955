"""Reading the USAGE stream (and FinOps' audit trail) from the beginning or a point in time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.events import AuditEvent, UsageRecorded, decode
from schemas.streams import AUDIT, USAGE
from services.finops.ledger import BudgetDef, BudgetReset, synthetic_envelope

BATCH: Final = 2000


async def read_stream(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    start_time: datetime | None = None,
    start_seq: int | None = None,
) -> AsyncIterator[Msg]:
    """Every message on ``subject`` from the start (or a time / sequence) to the current end."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    if not info.state.messages:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    if start_seq is not None:
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, max(1, start_seq)
    elif start_time is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = start_time.isoformat()  # type: ignore[assignment]
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        while True:
            try:
                msgs = await sub.fetch(BATCH, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            for msg in msgs:
                yield msg
            if msgs and msgs[-1].metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def read_usage(
    js: JetStreamContext, *, start_time: datetime | None = None, start_seq: int | None = None
) -> AsyncIterator[tuple[int, UsageRecorded]]:
    """(stream seq, event) of every well-formed usage event; malformed ones are the DLQ's."""
    async for msg in read_stream(js, USAGE.name, subjects.USAGE_RECORDED, start_time=start_time, start_seq=start_seq):
        try:
            yield msg.metadata.sequence.stream, decode(msg.data, UsageRecorded)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue


# --- the audit trail of budget changes -------------------------------------------------------

SET: Final = "budget_set"
RESET: Final = "budget_reset"
DELETE: Final = "budget_deleted"


def budget_set_audit(definition: BudgetDef, actor: str, request_id: str) -> AuditEvent:
    envelope = synthetic_envelope(definition, request_id, definition.updated_at)
    envelope.pop("occurred_at")
    return AuditEvent(
        **envelope,  # type: ignore[arg-type]
        occurred_at=definition.updated_at,
        deadline=definition.updated_at,
        stage="finops",
        outcome=SET,
        rule_id=f"budget.{definition.budget_id}",
        cost=definition.limit,
        attributes={
            "budget_id": definition.budget_id,
            "scope": definition.scope,
            "scope_id": definition.scope_id,
            "period": definition.period,
            "limit": repr(definition.limit),
            "warn_pct": repr(definition.warn_pct),
            "act_pct": repr(definition.act_pct),
            "action": definition.action,
            "currency": definition.currency,
            "actor": actor,
        },
    )


def budget_deleted_audit(definition: BudgetDef, actor: str, request_id: str, now: datetime) -> AuditEvent:
    envelope = synthetic_envelope(definition, request_id, now)
    envelope.pop("occurred_at")
    return AuditEvent(
        **envelope,  # type: ignore[arg-type]
        occurred_at=now,
        deadline=now,
        stage="finops",
        outcome=DELETE,
        rule_id=f"budget.{definition.budget_id}",
        attributes={"budget_id": definition.budget_id, "actor": actor},
    )


def budget_reset_audit(definition: BudgetDef, reset: BudgetReset, actor: str, request_id: str) -> AuditEvent:
    envelope = synthetic_envelope(definition, request_id, reset.at)
    envelope.pop("occurred_at")
    return AuditEvent(
        **envelope,  # type: ignore[arg-type]
        occurred_at=reset.at,
        deadline=reset.at,
        stage="finops",
        outcome=RESET,
        rule_id=f"budget.{definition.budget_id}",
        cost=reset.baseline_nanos / 1e9,
        attributes={
            "budget_id": definition.budget_id,
            "period": reset.period,
            "baseline_nanos": str(reset.baseline_nanos),
            "actor": actor,
        },
    )


def apply_trail(
    event: AuditEvent, definitions: dict[str, BudgetDef], resets: dict[str, BudgetReset]
) -> None:
    """Replay one audited budget change onto the definitions and resets."""
    a = event.attributes
    if event.outcome == SET:
        definition = msgspec.convert(
            {
                "budget_id": a["budget_id"],
                "scope": a["scope"],
                "scope_id": a["scope_id"],
                "period": a["period"],
                "limit": float(a["limit"]),
                "warn_pct": float(a["warn_pct"]),
                "act_pct": float(a["act_pct"]),
                "action": a["action"],
                "currency": a["currency"],
                "source": "cli",
                "updated_at": event.occurred_at,
            },
            BudgetDef,
        )
        definitions[definition.budget_id] = definition
    elif event.outcome == DELETE:
        definitions.pop(a["budget_id"], None)
        resets.pop(a["budget_id"], None)
    elif event.outcome == RESET:
        resets[a["budget_id"]] = BudgetReset(
            budget_id=a["budget_id"], period=a["period"], baseline_nanos=int(a["baseline_nanos"]),
            at=event.occurred_at,
        )


async def read_budget_trail(
    js: JetStreamContext, seeds: list[BudgetDef]
) -> tuple[dict[str, BudgetDef], dict[str, BudgetReset]]:
    """Budgets as the config seeds them, overlaid by every audited run-time change, in order."""
    definitions = {d.budget_id: d for d in seeds}
    resets: dict[str, BudgetReset] = {}
    async for msg in read_stream(js, AUDIT.name, subjects.audit("finops")):
        try:
            event = decode(msg.data, AuditEvent)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        try:
            apply_trail(event, definitions, resets)
        except (KeyError, ValueError, msgspec.ValidationError):
            continue  # an unreadable record changes nothing
    return definitions, resets
