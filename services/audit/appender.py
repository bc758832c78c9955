"""Appending events to their partition chains: batched, atomic, safe with several workers.

One append publishes up to 1,000 records as a JetStream *atomic batch*: the records are sent
back to back and the server stores all or none of them at commit, so one round trip chains a
whole batch. The first record carries ``Nats-Expected-Last-Subject-Sequence`` = the tail this
worker built on; if another worker extended the chain meanwhile the whole batch is refused,
the tail is re-read and the batch re-chained — the chain never forks. Every record carries
``Nats-Msg-Id`` = ``chain:<event_id>``, so an event that is chained already (a redelivery)
makes the server refuse the batch, and that batch is then appended one record at a time, where
the duplicate is dropped on its own. If the stream does not allow atomic batches, appends go
one record at a time (publish, wait for the ack) — correct, only slower.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import msgspec
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError

from schemas import subjects
from schemas.events import AuditEvent, AuditRecord, decode, encode, new_id
from services.audit.chain import extend, next_record
from services.audit.checkpoint import SigningKey, crosses_boundary, seal_checkpoint
from services.audit.metrics import AuditMetrics
from services.audit.reader import last_message, scan
from services.audit.stored import StoredMsg

MAX_BATCH = 1000  # the server's limit for one atomic batch
_WRONG_LAST_SEQUENCE = 10071
_WRONG_LAST_SEQUENCE_IN_BATCH = 10164
_ATOMIC_DISABLED = 10174
_DUPLICATE_IN_BATCH = 10201
_ATTEMPTS = 50
_RETRY_ATOMIC_AFTER_S = 60.0


class ChainContention(RuntimeError):
    """Other workers kept winning the race for a partition's tail."""


class Tail(NamedTuple):
    record: AuditRecord | None
    stream_seq: int  # 0 when the partition is empty


class _EventId(msgspec.Struct):
    event_id: str


class _RecordEventId(msgspec.Struct):
    event: _EventId


_event_id_of = msgspec.json.Decoder(_RecordEventId)


class Appender:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        stream: str,
        metrics: AuditMetrics,
        sealed_by: str,
        key: SigningKey | None = None,
        checkpoint_every: int = 1000,
        atomic_batches: bool = True,
    ) -> None:
        self._nc, self._js, self._stream = nc, js, stream
        self._metrics = metrics
        self._sealed_by = subjects.token(sealed_by)[:64] or "audit"
        self._key = key
        self._checkpoint_every = checkpoint_every
        self._tails: dict[str, Tail] = {}
        self._grown: set[str] = set()  # partitions appended to since the last timed checkpoint
        # Monotonic time from which atomic batches are tried (again).
        self._atomic_retry_at = 0.0 if atomic_batches else math.inf

    # --- appending ---------------------------------------------------------------------------

    async def append(self, partition: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Chain ``events`` (distinct event ids) in order; returns the records newly stored."""
        stored: list[AuditRecord] = []
        for start in range(0, len(events), MAX_BATCH):
            chunk = events[start : start + MAX_BATCH]
            if time.monotonic() >= self._atomic_retry_at:
                stored += await self._append_atomic(partition, chunk)
            else:
                stored += await self._append_each(partition, chunk)
        return stored

    async def _append_atomic(self, partition: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        for _ in range(_ATTEMPTS):
            tail = await self._tail(partition)
            records = extend(partition, tail.record, events)
            try:
                last_seq = await self._publish_batch(partition, records, tail.stream_seq)
            except APIError as exc:
                if exc.err_code in (_WRONG_LAST_SEQUENCE, _WRONG_LAST_SEQUENCE_IN_BATCH):
                    self._metrics.append_conflicts.inc()
                    self._tails.pop(partition, None)
                    continue
                if exc.err_code == _DUPLICATE_IN_BATCH:
                    return await self._append_each(partition, events)
                if exc.err_code == _ATOMIC_DISABLED and await self._allow_atomic():
                    continue
                if exc.err_code == _ATOMIC_DISABLED:
                    self._atomic_retry_at = time.monotonic() + _RETRY_ATOMIC_AFTER_S
                    return await self._append_each(partition, events)
                raise
            except (TimeoutError, NatsTimeoutError):
                # Maybe committed, maybe not: re-read the tail; if it was, the retry's records
                # are duplicates by message id and fall through to the one-by-one path.
                self._tails.pop(partition, None)
                continue
            await self._advance(partition, tail, records, last_seq)
            return records
        raise ChainContention(partition)

    async def _publish_batch(self, partition: str, records: Sequence[AuditRecord], last_seq: int) -> int:
        subject = subjects.audit_chain(partition)
        batch_id = new_id()
        last = len(records)
        for number, record in enumerate(records, 1):
            headers = {
                "Nats-Msg-Id": f"chain:{record.event.event_id}",
                Header.BATCH_ID: batch_id,
                Header.BATCH_SEQUENCE: str(number),
            }
            if number == 1:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(last_seq)
            if number < last:
                await self._nc.publish(subject, encode(record), headers=headers)
                continue
            headers[Header.BATCH_COMMIT] = "1"
            reply = await self._nc.request(subject, encode(record), timeout=10.0, headers=headers)
            answer = json.loads(reply.data)
            if "error" in answer:
                error = answer["error"]
                raise APIError(code=error.get("code"), err_code=error.get("err_code"),
                               description=error.get("description"))
            seq: int = answer["seq"]
            return seq
        raise ValueError("empty batch")

    async def _append_each(self, partition: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """One record per publish, each waiting for its ack: the path for duplicates."""
        stored: list[AuditRecord] = []
        subject = subjects.audit_chain(partition)
        for event in events:
            for _ in range(_ATTEMPTS):
                tail = await self._tail(partition)
                record = next_record(partition, tail.record, event)
                headers = {
                    "Nats-Msg-Id": f"chain:{event.event_id}",
                    "Nats-Expected-Last-Subject-Sequence": str(tail.stream_seq),
                }
                try:
                    ack = await self._js.publish(subject, encode(record), headers=headers)
                except APIError as exc:
                    if exc.err_code != _WRONG_LAST_SEQUENCE:
                        raise
                    self._metrics.append_conflicts.inc()
                    self._tails.pop(partition, None)
                    continue
                if ack.duplicate:
                    self._tails.pop(partition, None)  # chained before; our tail may be stale
                else:
                    await self._advance(partition, tail, [record], ack.seq)
                    stored.append(record)
                break
            else:
                raise ChainContention(partition)
        return stored

    async def _tail(self, partition: str) -> Tail:
        tail = self._tails.get(partition)
        if tail is None:
            found = await last_message(self._js, self._stream, subjects.audit_chain(partition))
            tail = Tail(None, 0) if found is None else Tail(decode(found[1], AuditRecord), found[0])
            self._tails[partition] = tail
        return tail

    async def _advance(
        self, partition: str, before: Tail, records: Sequence[AuditRecord], last_stream_seq: int
    ) -> None:
        head = records[-1]
        self._tails[partition] = Tail(head, last_stream_seq)
        self._grown.add(partition)
        previous_seq = before.record.seq if before.record else 0
        if crosses_boundary(previous_seq, head.seq, self._checkpoint_every):
            await self._checkpoint(head, last_stream_seq)

    async def _allow_atomic(self) -> bool:
        """Switch atomic batches on for the stream; False when this worker may not."""
        try:
            info = await self._js.stream_info(self._stream)
            config = info.config
            config.allow_atomic = True
            await self._js.update_stream(config)
        except Exception:  # noqa: BLE001 - e.g. no permission: append one by one instead
            return False
        return True

    # --- checkpoints -------------------------------------------------------------------------

    async def _checkpoint(self, head: AuditRecord, head_stream_seq: int) -> None:
        checkpoint = seal_checkpoint(head, head_stream_seq, sealed_by=self._sealed_by, key=self._key)
        await self._js.publish(
            subjects.audit_checkpoint(head.partition),
            encode(checkpoint),
            headers={"Nats-Msg-Id": f"ckpt:{head.partition}:{head.seq}"},
        )
        self._metrics.checkpoints.inc()

    async def seal_grown(self) -> None:
        """Checkpoint the current head of every partition this worker extended since last time."""
        grown, self._grown = self._grown, set()
        for partition in sorted(grown):
            head = await last_message(self._js, self._stream, subjects.audit_chain(partition))
            if head is None:
                continue
            record = decode(head[1], AuditRecord)
            sealed = await last_message(self._js, self._stream, subjects.audit_checkpoint(partition))
            if sealed is not None and _sealed_seq(sealed[1]) >= record.seq:
                continue  # another worker (or a count boundary) covered this head already
            await self._checkpoint(record, head[0])

    # --- redeliveries after the duplicate window -----------------------------------------------

    async def chained_already(self, partition: str, event_ids: set[str], since: datetime) -> set[str]:
        """Which of ``event_ids`` have a record in the partition stored since ``since``.

        For redeliveries older than the stream's duplicate window, where ``Nats-Msg-Id`` no
        longer catches a second append: the chain itself is searched instead.
        """
        found: set[str] = set()

        def look(msg: StoredMsg) -> bool:
            event_id = _event_id_of.decode(msg.data).event.event_id
            if event_id in event_ids:
                found.add(event_id)
            return len(found) < len(event_ids)

        await scan(
            self._js, self._stream, subjects.audit_chain(partition), look, start_time=since - timedelta(seconds=1)
        )
        return found


class _Seq(msgspec.Struct):
    seq: int


def _sealed_seq(data: bytes) -> int:
    return msgspec.json.decode(data, type=_Seq).seq
