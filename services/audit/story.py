"""The story of one request from its audit records: stages in order, with timings. Pure.

Events carry ``occurred_at`` from the stage that decided; the order of chaining can differ
(stages publish concurrently, several audit workers), so the story sorts by time and breaks
ties by the order of the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, get_args

from schemas.events import AuditEvent, AuditRecord
from schemas.vocabulary import Stage

_STAGE_ORDER: Final = {stage: index for index, stage in enumerate(get_args(Stage))}


@dataclass(frozen=True, slots=True)
class Step:
    stage: str
    outcome: str
    occurred_at: datetime
    since_start_ms: float
    since_previous_ms: float
    detail: str
    partition: str
    seq: int


def story(records: Iterable[AuditRecord]) -> list[Step]:
    ordered = sorted(
        records, key=lambda r: (r.event.occurred_at, _STAGE_ORDER.get(r.event.stage, 99), r.seq)
    )
    steps: list[Step] = []
    for record in ordered:
        event = record.event
        start = ordered[0].event.occurred_at
        previous = steps[-1].occurred_at if steps else start
        steps.append(
            Step(
                stage=event.stage,
                outcome=event.outcome,
                occurred_at=event.occurred_at,
                since_start_ms=(event.occurred_at - start).total_seconds() * 1000,
                since_previous_ms=(event.occurred_at - previous).total_seconds() * 1000,
                detail=describe(event),
                partition=record.partition,
                seq=record.seq,
            )
        )
    return steps


def describe(event: AuditEvent) -> str:
    """The decision in one line, from metadata only."""
    parts: list[str] = []
    if event.reason_code:
        parts.append(f"reason={event.reason_code}")
    if event.rule_id:
        parts.append(f"rule={event.rule_id}")
    if event.policy_version:
        parts.append(f"policy={event.policy_version[:19]}")
    if event.data_sensitivity:
        parts.append(f"sensitivity={event.data_sensitivity}")
    if event.entities:
        parts.append("entities=" + ",".join(f"{e.type}:{e.count}" for e in event.entities))
    if event.route:
        parts.append(f"route={event.route}")
    if event.fallbacks:
        parts.append("fallbacks=" + ",".join(event.fallbacks))
    if event.model:
        parts.append(f"model={event.model}@{event.model_version or '?'}")
    if event.prompt_tokens is not None or event.completion_tokens is not None:
        parts.append(f"tokens={event.prompt_tokens or 0}+{event.completion_tokens or 0}")
    if event.ttft_ms is not None:
        parts.append(f"ttft={event.ttft_ms:.1f}ms")
    if event.latency_ms is not None:
        parts.append(f"latency={event.latency_ms:.1f}ms")
    if event.cost is not None:
        parts.append(f"cost={event.cost:.6f}")
    return " ".join(parts)
