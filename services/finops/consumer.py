"""Batch consumption of the USAGE stream, with the worker shell's ack/DLQ discipline.

The shared worker shell hands a handler one message at a time (~2,000 messages/s per
process). FinOps must price ≥ 5,000 events/s per worker, so it pulls batches of up to
``STELLWERK_FINOPS_BATCH`` messages from the same durable consumer and applies each batch
to a KV document with one compare-and-set per scope touched. The rules stay the shell's:

* explicit acks, sent only after the batch is in KV; the next batch is fetched only after
  the server has the acks (``flush``) — which is what lets ``ledger.apply_batch`` recognise
  a redelivery by its seq in the worker's *latest* batch journal;
* a message that does not decode is dead-lettered at once (``malformed``) and acked;
* a failing batch (KV unreachable) is retried in place with backoff while the messages are
  kept alive with in-progress acks; after ``max_deliver`` attempts its messages are NAKed
  for redelivery (those on their last delivery are dead-lettered) and the worker continues
  under a fresh incarnation id, so the journal of the abandoned batch stays valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas import subjects
from schemas.events import DeadLetter, UsageRecorded, decode
from schemas.streams import FINOPS_USAGE
from services.runtime.worker import Worker

BACKOFF_S: Final = (0.2, 1.0, 3.0, 5.0)
MAX_ACK_PENDING: Final = 16_384


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    event: UsageRecorded
    msg: Msg


BatchHandler = Callable[[list[Delivery], int, str], Awaitable[None]]


def new_incarnation(worker_id: str) -> str:
    return f"{subjects.token(worker_id)}-{uuid.uuid4().hex[:8]}"


class UsageConsumer:
    def __init__(self, worker: Worker, handle: BatchHandler, *, batch_size: int = 500) -> None:
        self.worker = worker
        self.handle = handle
        self.batch_size = batch_size
        self.incarnation = new_incarnation(worker.settings.worker_id)
        self.batches = 0
        self.ack_floor = 0

    async def ensure_consumer(self) -> None:
        settings = self.worker.settings
        await self.worker.js.add_consumer(
            FINOPS_USAGE.stream,
            ConsumerConfig(
                durable_name=FINOPS_USAGE.durable,
                description=FINOPS_USAGE.description,
                filter_subject=FINOPS_USAGE.filter_subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=settings.ack_wait_s,
                max_deliver=settings.max_deliver,
                max_ack_pending=MAX_ACK_PENDING,
            ),
        )

    async def refresh_ack_floor(self) -> None:
        info = await self.worker.js.consumer_info(FINOPS_USAGE.stream, FINOPS_USAGE.durable)
        self.ack_floor = max(self.ack_floor, info.ack_floor.stream_seq if info.ack_floor else 0)

    async def run(self) -> None:
        await self.ensure_consumer()
        sub = await self.worker.js.pull_subscribe_bind(FINOPS_USAGE.durable, FINOPS_USAGE.stream)
        try:
            while True:
                try:
                    msgs = await sub.fetch(self.batch_size, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.Error, OSError) as exc:  # reconnecting: try again shortly
                    self.worker.log.warning("usage_fetch_failed", error=type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                await self.process(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def process(self, msgs: list[Msg]) -> None:
        self.batches += 1
        deliveries: list[Delivery] = []
        for msg in msgs:
            try:
                deliveries.append(Delivery(msg.metadata.sequence.stream, decode(msg.data, UsageRecorded), msg))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await self.dead_letter(msg, "malformed", str(exc))  # names the field, never the value
        if deliveries and not await self._handle_with_retries(deliveries):
            return
        for msg in msgs:
            await msg.ack()
        try:
            await self.worker.nc.flush(timeout=5)
        except (nats.errors.Error, TimeoutError, OSError):
            # Acks may be lost: their messages can come back, so the journal entry of this
            # batch must stay — continue as a new incarnation.
            self.incarnation = new_incarnation(self.worker.settings.worker_id)

    async def _handle_with_retries(self, deliveries: list[Delivery]) -> bool:
        max_attempts = max(1, self.worker.settings.max_deliver)
        for attempt in range(max_attempts):
            try:
                await self.handle(deliveries, self.batches, self.incarnation)
                return True
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then handed back
                self.worker.log.warning("usage_batch_failed", error=type(exc).__name__, attempt=attempt + 1)
                if attempt + 1 == max_attempts:
                    break
                await self._keep_alive(deliveries)
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                await self._keep_alive(deliveries)
        for delivery in deliveries:
            msg = delivery.msg
            if msg.metadata.num_delivered >= self.worker.settings.max_deliver:
                await self.dead_letter(msg, "max_deliver_exceeded", "batch_failed")
                await msg.ack()
            else:
                await msg.nak(delay=BACKOFF_S[-1])
        self.incarnation = new_incarnation(self.worker.settings.worker_id)
        return False

    async def _keep_alive(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            with contextlib.suppress(nats.errors.Error):
                await delivery.msg.in_progress()

    async def dead_letter(self, msg: Msg, reason: str, detail: str) -> None:
        letter = DeadLetter(
            service=self.worker.service,
            subject=msg.subject,
            reason=reason,
            detail=detail[:500],
            deliveries=msg.metadata.num_delivered,
            payload=msg.data,
            headers={k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")},
        )
        seq = msg.metadata.sequence.stream
        await self.worker.publish(
            subjects.dlq(self.worker.service), letter, f"dlq:{self.worker.service}:{msg.subject}:{seq}"
        )
