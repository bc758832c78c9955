"""Hash chaining of audit records: each record commits to its predecessor in its partition.

Version 2 (written now): hash = SHA-256 of the canonical record without its ``hash`` field —
partition, seq, prev_hash, recorded_at and the event, default-valued fields left out (see
``canonical``). Version 1 (the walking skeleton): SHA-256(prev_hash ‖ "\\n" ‖ event JSON).
Altering, removing or reordering any record breaks the chain from that record on, which
``ChainCursor`` reports; ``services.audit.verify`` adds partitions, checkpoints and seals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from schemas import subjects
from schemas.events import AuditEvent, AuditRecord, utcnow
from services.audit.canonical import canonical

GENESIS = "0" * 64
HASH_VERSION = 2

_v1_encoder = msgspec.json.Encoder(order="sorted")


def record_hash(record: AuditRecord) -> str:
    """The hash a record must carry, recomputed from its other fields."""
    if record.hash_version == 1:
        payload = record.prev_hash.encode() + b"\n" + _v1_encoder.encode(record.event)
    else:
        payload = canonical(record, drop="hash")
    return hashlib.sha256(payload).hexdigest()


def next_record(
    partition: str, previous: AuditRecord | None, event: AuditEvent, recorded_at: datetime | None = None
) -> AuditRecord:
    record = AuditRecord(
        partition=partition,
        seq=previous.seq + 1 if previous else 1,
        prev_hash=previous.hash if previous else GENESIS,
        hash=GENESIS,  # placeholder: the hash covers every other field
        event=event,
        recorded_at=recorded_at or utcnow(),
        hash_version=HASH_VERSION,
    )
    record.hash = record_hash(record)
    return record


def extend(partition: str, previous: AuditRecord | None, events: Sequence[AuditEvent]) -> list[AuditRecord]:
    """Chain a batch of events after ``previous``; one timestamp for the batch."""
    now = utcnow()
    records: list[AuditRecord] = []
    for event in events:
        previous = next_record(partition, previous, event, now)
        records.append(previous)
    return records


def unique_events(events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """Drop repeated event ids, keeping the first: one record per event."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            out.append(event)
    return out


def partition_of(event: AuditEvent) -> str:
    """One chain per tenant: tenants' evidence stays separable, chains stay short to verify."""
    return subjects.token(event.tenant)


Problem = Literal[
    "missing_record",  # a sequence number is skipped (a record was removed)
    "out_of_order",  # a sequence number repeats or goes back (a fork or a re-inserted record)
    "prev_hash_mismatch",  # the record does not point at its predecessor's hash
    "hash_mismatch",  # the record's content does not match its hash (altered)
    "duplicate_event",  # an event was chained twice
    "checkpoint_mismatch",  # a checkpoint names a different hash for this record
    "bad_seal",  # a checkpoint's seal does not verify
    "unanchored",  # the chain starts neither at genesis nor at a checkpoint
    "malformed_record",  # stored bytes that are no valid record (damaged or forged)
    "malformed_checkpoint",  # stored bytes that are no valid checkpoint (its seq is unknown: 0)
]


@dataclass(frozen=True, slots=True)
class ChainBreak:
    partition: str
    seq: int
    problem: Problem


class ChainCursor:
    """Walks one partition's records in order and names the first one that does not fit."""

    __slots__ = ("expected_prev", "expected_seq", "partition")

    def __init__(self, partition: str, expected_seq: int = 1, expected_prev: str = GENESIS) -> None:
        self.partition = partition
        self.expected_seq = expected_seq
        self.expected_prev = expected_prev

    def check(self, record: AuditRecord) -> ChainBreak | None:
        if record.seq > self.expected_seq:
            return ChainBreak(self.partition, self.expected_seq, "missing_record")
        if record.seq < self.expected_seq:
            return ChainBreak(self.partition, record.seq, "out_of_order")
        if record.prev_hash != self.expected_prev:
            return ChainBreak(self.partition, record.seq, "prev_hash_mismatch")
        if record_hash(record) != record.hash:
            return ChainBreak(self.partition, record.seq, "hash_mismatch")
        self.expected_seq, self.expected_prev = record.seq + 1, record.hash
        return None


def verify_chain(records: Iterable[AuditRecord]) -> ChainBreak | None:
    """Recompute one partition's chain from genesis; return the first break, if any."""
    cursor: ChainCursor | None = None
    for record in records:
        cursor = cursor or ChainCursor(record.partition)
        broken = cursor.check(record)
        if broken:
            return broken
    return None
