"""Audit worker contract.

consumes  stellwerk.v1.audit.<stage>          (durable ``audit`` on the AUDIT stream)
publishes stellwerk.v1.audit.chain.<partition> (AuditRecord, hash-chained, into AUDIT)

Several audit workers may append to one partition: each append states the subject sequence
it expects to follow (``Nats-Expected-Last-Subject-Sequence``), so a lost race is retried
against the new tail instead of forking the chain; ``Nats-Msg-Id`` = event id drops a
redelivered event that was already chained.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from nats.js.errors import APIError, NotFoundError

from schemas import subjects
from schemas.events import AuditEvent, AuditRecord, decode, encode
from schemas.streams import AUDIT, AUDIT_INTAKE
from services.audit.chain import next_record, partition_of
from services.runtime.telemetry import inject_headers
from services.runtime.worker import Worker

_WRONG_LAST_SEQUENCE = 10071
_APPEND_ATTEMPTS = 50


def build(worker: Worker) -> None:
    tails: dict[str, tuple[AuditRecord | None, int]] = {}
    # Appends to one partition are serialised inside a worker (they would only race for the
    # tail); across workers the expected-sequence check does the same job.
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def load_tail(partition: str) -> tuple[AuditRecord | None, int]:
        try:
            msg = await worker.js.get_last_msg(AUDIT.name, subjects.audit_chain(partition))
        except NotFoundError:
            return None, 0
        return decode(msg.data or b"", AuditRecord), msg.seq or 0

    async def on_event(event: AuditEvent) -> None:
        partition = partition_of(event)
        async with locks[partition]:
            await append(partition, event)

    async def append(partition: str, event: AuditEvent) -> None:
        subject = subjects.audit_chain(partition)
        for _ in range(_APPEND_ATTEMPTS):
            if partition not in tails:
                tails[partition] = await load_tail(partition)
            previous, last_seq = tails[partition]
            record = next_record(partition, previous, event)
            headers = inject_headers(
                {
                    "Nats-Msg-Id": f"chain:{event.event_id}",
                    "Nats-Expected-Last-Subject-Sequence": str(last_seq),
                }
            )
            try:
                ack = await worker.js.publish(subject, encode(record), headers=headers)
            except APIError as exc:
                if exc.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                tails.pop(partition, None)  # another worker appended: re-read the tail
                continue
            if ack.duplicate:
                tails.pop(partition, None)
            else:
                tails[partition] = (record, ack.seq)
            return
        raise RuntimeError("audit chain contention")

    worker.consume(AUDIT_INTAKE, AuditEvent, on_event)
