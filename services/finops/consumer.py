"""FinOps' view of the USAGE stream: the engine's batch consumer plus the ledger's bookkeeping.

The ack / NAK / dead-letter / keep-alive discipline is the worker engine's
(``Worker.consume_batch``). What FinOps adds is what its exactly-once ledger needs:

* an *incarnation* id: ``ledger.apply_batch`` recognises a redelivery by its seq in the
  worker's latest batch journal, which is only valid while every batch's acks reached the
  server — whenever that is uncertain (a batch handed back, a failed flush) the worker
  continues under a fresh incarnation, so the journal of the abandoned batch stays valid;
* the consumer's *ack floor*, below which every event is booked for good.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import UsageRecorded
from schemas.streams import FINOPS_USAGE
from services.runtime.worker import Delivery, Worker

BatchHandler = Callable[[list[Delivery], int, str], Awaitable[None]]

_decode = msgspec.json.Decoder(UsageRecorded).decode


def new_incarnation(worker_id: str) -> str:
    return f"{subjects.token(worker_id)}-{uuid.uuid4().hex[:8]}"


def decode_usage(msg: Msg) -> UsageRecorded:
    event: UsageRecorded = _decode(msg.data)
    return event


class UsageConsumer:
    def __init__(self, worker: Worker, handle: BatchHandler, *, batch_size: int = 500, linger_s: float = 0.05) -> None:
        self.worker = worker
        self.handle = handle
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.incarnation = new_incarnation(worker.settings.worker_id)
        self.batches = 0
        self.ack_floor = 0

    def bind(self) -> None:
        self.worker.consume_batch(
            FINOPS_USAGE,
            decode_usage,
            self._handle,
            batch_size=self.batch_size,
            linger_s=self.linger_s,
            on_unsettled=self._new_incarnation,
        )

    async def _handle(self, deliveries: list[Delivery]) -> Sequence[Delivery]:
        self.batches += 1
        await self.handle(deliveries, self.batches, self.incarnation)
        return ()

    def _new_incarnation(self) -> None:
        self.incarnation = new_incarnation(self.worker.settings.worker_id)

    async def refresh_ack_floor(self) -> None:
        info = await self.worker.js.consumer_info(FINOPS_USAGE.stream, FINOPS_USAGE.durable)
        self.ack_floor = max(self.ack_floor, info.ack_floor.stream_seq if info.ack_floor else 0)
