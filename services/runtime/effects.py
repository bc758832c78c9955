"""What a handler wants to happen, as data: the engine (``services.runtime.worker``) carries it out.

A handler of the request path is a function from a decoded event (plus read-only state such
as a policy or runtime signals) to a list of effects. It never touches the bus itself, so a
unit test calls it with an event and inspects what it returned — no server, no mocks.

Effects and the order the engine carries them out in:

1. ``Publish`` (JetStream, idempotent by ``msg_id``) and ``Record`` (audit events, written as
   one trail message) — all of them concurrently, each acknowledged by the stream;
2. ``Reply`` — the final result to the caller (core NATS), only after every stored effect is
   acknowledged: an answer never reaches a caller before its audit record exists.

``Fail`` ends a request early with a typed error; the engine turns it into a ``Record`` of
the request's trail plus the failure and a ``Reply`` with the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.events import AuditEvent, RequestResult, RequestSubmitted, ResultError, envelope_fields
from schemas.vocabulary import ErrorCode, ResultStatus, Stage
from services.runtime.errors import fixed_message


@dataclass(frozen=True, slots=True)
class Publish:
    """Store ``event`` on a stream subject; the same ``msg_id`` is stored only once."""

    subject: str
    event: msgspec.Struct
    msg_id: str


@dataclass(frozen=True, slots=True)
class Record:
    """Write these audit events now (as one trail message for the audit service)."""

    events: list[AuditEvent]


@dataclass(frozen=True, slots=True)
class Reply:
    """Deliver the final result to whoever waits on ``result.<request_id>``."""

    result: RequestResult


@dataclass(frozen=True, slots=True)
class Fail:
    """End the request with a typed error. ``audits``: the stage's own records of what it
    decided; when there are none, the engine records the failure itself."""

    code: ErrorCode
    stage: Stage
    status: ResultStatus = "failed"
    rule_id: str | None = None
    retry_after_s: float | None = None
    audits: list[AuditEvent] = field(default_factory=list)
    result_fields: dict[str, Any] = field(default_factory=dict)


Effect = Publish | Record | Reply | Fail
Effects = list[Effect]


def trail_of(event: msgspec.Struct) -> list[AuditEvent]:
    """The audit events an event of the request path carries from the stages before."""
    return list(event.trail) if isinstance(event, RequestSubmitted) else []


def failure_result(event: Any, fail: Fail) -> RequestResult:
    error = ResultError(
        code=fail.code,
        stage=fail.stage,
        message=fixed_message(fail.code),
        retry_after_s=fail.retry_after_s,
        rule_id=fail.rule_id,
    )
    return RequestResult(
        **envelope_fields(event),
        status="blocked" if fail.status == "blocked" else "failed",
        error=error,
        **fail.result_fields,
    )


def failure_audits(event: Any, fail: Fail) -> list[AuditEvent]:
    if fail.audits:
        return fail.audits
    return [AuditEvent(
        **envelope_fields(event),
        stage=fail.stage,
        outcome="blocked" if fail.status == "blocked" else "failed",
        reason_code=fail.code,
        rule_id=fail.rule_id,
    )]


def expand(event: Any, effects: Effects) -> tuple[list[Publish | Record], list[Reply]]:
    """Split effects into what is stored first and what is delivered after; ``Fail`` becomes
    the trail plus the failure record, then the typed reply."""
    stored: list[Publish | Record] = []
    replies: list[Reply] = []
    for effect in effects:
        if isinstance(effect, Reply):
            replies.append(effect)
        elif isinstance(effect, Fail):
            stored.append(Record([*trail_of(event), *failure_audits(event, effect)]))
            replies.append(Reply(failure_result(event, effect)))
        else:
            stored.append(effect)
    return stored, replies
