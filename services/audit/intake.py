"""The audit intake: events off the durable ``audit`` consumer, in batches, into the chains.

Chaining wants many events at once, so the intake uses the engine's batch consumer
(``Worker.consume_batch``): up to ``batch`` messages, each partition's share appended in one
atomic batch, acked afterwards — malformed messages go to the DLQ at once, a failed append
is NAKed with backoff and dead-lettered after ``max_deliver`` deliveries (the engine's
discipline, written once). An event is acked only after its record is stored, so a crash
between the two redelivers it — and the append's dedupe makes that harmless.

A message holds one event (``audit.<stage>``) or a request's whole trail
(``audit.trail.<stage>``, issue 11): the stages of a request carry their records along and
the stage that ends it writes them at once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta

import msgspec
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import AuditEvent, AuditTrail, utcnow
from schemas.streams import AUDIT_INTAKE
from services.audit.appender import Appender
from services.audit.chain import partition_of, unique_events
from services.audit.metrics import AuditMetrics
from services.runtime.worker import Delivery, Worker

# Redeliveries older than this may have outlived the stream's duplicate window (2 min).
_DEDUPE_TRUSTED_S = 60.0

_decode = msgspec.json.Decoder(AuditEvent).decode
_decode_trail = msgspec.json.Decoder(AuditTrail).decode


def decode_audit(msg: Msg) -> list[AuditEvent]:
    """A message's audit events: one, or a request's whole trail."""
    if msg.subject.startswith(subjects.AUDIT_TRAIL_PREFIX):
        return _decode_trail(msg.data).events
    return [_decode(msg.data)]


class Intake:
    def __init__(self, worker: Worker, metrics: AuditMetrics, batch: int) -> None:
        self._worker = worker
        self.appender: Appender | None = None  # set once the worker is connected
        self._metrics = metrics
        self._batch = batch

    def bind(self, linger_s: float = 0.02) -> None:
        """Consume the durable ``audit`` with the engine's batch discipline."""
        self._worker.consume_batch(
            AUDIT_INTAKE, decode_audit, self.handle, batch_size=self._batch, linger_s=linger_s
        )

    async def handle(self, batch: list[Delivery]) -> list[Delivery]:
        """Chain each partition's share in one atomic append; hand back the deliveries of
        partitions whose append failed (the engine NAKs or dead-letters them)."""
        groups: defaultdict[str, list[tuple[Delivery, AuditEvent]]] = defaultdict(list)
        for delivery in batch:
            for event in delivery.event:
                groups[partition_of(event)].append((delivery, event))
        with self._worker.tracer.start_as_current_span("audit.append") as span:
            span.set_attribute("stellwerk.audit.events", len(batch))
            outcomes = await asyncio.gather(*(self._append(p, items) for p, items in groups.items()))
        failed: dict[int, Delivery] = {}
        for error, items in zip(outcomes, groups.values(), strict=True):
            if error is not None:
                self._worker.log.warning("audit_append_failed", error=error, events=len(items))
                failed.update((id(d), d) for d, _ in items)
        return list(failed.values())

    async def _append(self, partition: str, items: list[tuple[Delivery, AuditEvent]]) -> str | None:
        """Chain one partition's events; the error's type name if that failed."""
        assert self.appender is not None, "audit intake not started"
        try:
            events = unique_events(event for _, event in items)
            late = [(d.msg, event) for d, event in items if _late_redelivery(d)]
            if late:
                since = min(msg.metadata.timestamp for msg, _ in late)
                done = await self.appender.chained_already(partition, {e.event_id for _, e in late}, since)
                events = [event for event in events if event.event_id not in done]
            records = await self.appender.append(partition, events)
        except Exception as exc:  # noqa: BLE001 - handed back: retried with backoff, then dead-lettered
            return type(exc).__name__
        self._metrics.observe(records)
        return None


def _late_redelivery(delivery: Delivery) -> bool:
    if delivery.deliveries == 1:  # nearly all: no metadata parsing for them
        return False
    meta = delivery.msg.metadata
    return meta.timestamp is not None and utcnow() - meta.timestamp > timedelta(seconds=_DEDUPE_TRUSTED_S)
