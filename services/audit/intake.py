"""The audit intake: takes events off the durable ``audit`` consumer in batches and chains them.

The shared worker shell hands a handler one message at a time (at most eight in flight);
chaining wants many at once, so this loop pulls up to ``batch`` events, appends each
partition's share in one atomic batch and acks them afterwards, with the shell's discipline:
malformed events go to the DLQ at once, a failed append is NAKed with backoff and dead-lettered
after ``max_deliver`` deliveries. An event is acked only after its record is stored, so a
crash between the two redelivers it — and the append's dedupe makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import timedelta

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError

from schemas import subjects
from schemas.events import AuditEvent, AuditTrail, DeadLetter, utcnow
from schemas.streams import AUDIT, AUDIT_INTAKE
from services.audit.appender import Appender
from services.audit.chain import partition_of, unique_events
from services.audit.metrics import AuditMetrics
from services.runtime.worker import Worker

_BACKOFF_S = (0.2, 1.0, 3.0, 5.0)
_FETCH_WAIT_S = 1.0
# Redeliveries older than this may have outlived the stream's duplicate window (2 min).
_DEDUPE_TRUSTED_S = 60.0

_decode = msgspec.json.Decoder(AuditEvent).decode
_decode_trail = msgspec.json.Decoder(AuditTrail).decode


class Intake:
    def __init__(self, worker: Worker, appender: Appender, metrics: AuditMetrics, batch: int) -> None:
        self._worker = worker
        self._appender = appender
        self._metrics = metrics
        self._batch = batch

    async def serve(self) -> None:
        """Consume until the connection closes (the worker shell restarts it after an error)."""
        js = self._worker.js
        config = ConsumerConfig(
            durable_name=AUDIT_INTAKE.durable,
            filter_subjects=list(AUDIT_INTAKE.filter_subjects),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._worker.settings.ack_wait_s,
            max_deliver=self._worker.settings.max_deliver,
            # Room for a few workers' full batches in flight at once.
            max_ack_pending=max(AUDIT_INTAKE.max_ack_pending, 4 * self._batch),
            description=AUDIT_INTAKE.description,
        )
        # Create, or update an older definition; one whose settings cannot change is used as is.
        with contextlib.suppress(BadRequestError):
            await js.add_consumer(AUDIT.name, config)
        sub = await js.pull_subscribe_bind(durable=AUDIT_INTAKE.durable, stream=AUDIT.name)
        try:
            while not self._worker.nc.is_closed:
                try:
                    msgs = await sub.fetch(batch=self._batch, timeout=_FETCH_WAIT_S)
                except (TimeoutError, NatsTimeoutError):
                    continue
                await self.handle(msgs)
        finally:
            # On shutdown the connection is drained, which waits for every subscription's
            # queue to empty; fetched-but-unhandled messages would hold it until the drain
            # timeout. Unacked, they are redelivered to the next worker.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def handle(self, msgs: list[Msg]) -> None:
        groups: defaultdict[str, list[tuple[Msg, AuditEvent]]] = defaultdict(list)
        decoded: list[Msg] = []
        for msg in msgs:
            try:
                # A trail carries the events of every stage a request passed (issue 11).
                trail = (
                    _decode_trail(msg.data).events
                    if msg.subject.startswith(subjects.AUDIT_TRAIL_PREFIX)
                    else [_decode(msg.data)]
                )
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                # The decoder names the field and the expected type, never the value.
                await self._dead_letter(msg, "malformed", str(exc))
                await msg.ack()
                continue
            decoded.append(msg)
            for event in trail:
                groups[partition_of(event)].append((msg, event))
        with self._worker.tracer.start_as_current_span("audit.append") as span:
            span.set_attribute("stellwerk.audit.events", len(msgs))
            outcomes = await asyncio.gather(*(self._append(p, items) for p, items in groups.items()))
        failed: dict[int, Msg] = {}
        for error, (_, items) in zip(outcomes, groups.items(), strict=True):
            if error is not None:
                failed.update((id(msg), msg) for msg, _ in items)
        if failed:
            await self._retry_or_dead_letter(list(failed.values()), next(e for e in outcomes if e))
        for msg in decoded:
            if id(msg) not in failed:
                await msg.ack()

    async def _append(self, partition: str, items: list[tuple[Msg, AuditEvent]]) -> str | None:
        """Chain one partition's events; the error's type name if that failed."""
        try:
            events = unique_events(event for _, event in items)
            late = [(msg, event) for msg, event in items if _late_redelivery(msg)]
            if late:
                since = min(msg.metadata.timestamp for msg, _ in late)
                done = await self._appender.chained_already(partition, {e.event_id for _, e in late}, since)
                events = [event for event in events if event.event_id not in done]
            records = await self._appender.append(partition, events)
        except Exception as exc:  # noqa: BLE001 - retried with backoff, then dead-lettered
            return type(exc).__name__
        self._metrics.observe(records)
        return None

    async def _retry_or_dead_letter(self, msgs: list[Msg], error: str) -> None:
        deliveries = msgs[0].metadata.num_delivered or 1
        self._worker.log.warning("audit_append_failed", error=error, deliveries=deliveries, events=len(msgs))
        for msg in msgs:
            delivered = msg.metadata.num_delivered or 1
            if delivered >= self._worker.settings.max_deliver:
                await self._dead_letter(msg, "max_deliver_exceeded", error)
                await msg.ack()
            else:
                await msg.nak(delay=_BACKOFF_S[min(delivered, len(_BACKOFF_S)) - 1])

    async def _dead_letter(self, msg: Msg, reason: str, detail: str) -> None:
        meta = msg.metadata
        letter = DeadLetter(
            service="audit",
            subject=msg.subject,
            reason=reason,
            detail=detail[:500],
            deliveries=meta.num_delivered or 1,
            payload=msg.data,
            headers={k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")},
        )
        seq = meta.sequence.stream if meta.sequence else 0
        await self._worker.publish(subjects.dlq("audit"), letter, f"dlq:audit:{msg.subject}:{seq}")


def _late_redelivery(msg: Msg) -> bool:
    # The delivery count is the fifth token of the ack subject (``$JS.ACK.<stream>.<consumer>.
    # <delivered>…``, two tokens later with a domain): read it without parsing all metadata,
    # which costs more than the append itself for first deliveries, nearly all of them.
    tokens = msg.reply.split(".")
    if (tokens[4] if len(tokens) == 9 else tokens[6]) == "1":
        return False
    meta = msg.metadata
    return meta.timestamp is not None and utcnow() - meta.timestamp > timedelta(seconds=_DEDUPE_TRUSTED_S)

