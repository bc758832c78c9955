"""Hash chaining of audit records: each record commits to its predecessor in its partition.

hash = SHA-256(prev_hash ‖ canonical JSON of the event). Altering, removing or reordering
any record breaks every hash after it, which ``verify_chain`` reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from schemas import subjects
from schemas.events import AuditEvent, AuditRecord

GENESIS = "0" * 64

_canonical = msgspec.json.Encoder(order="sorted")


def record_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical.encode(event)).hexdigest()


def next_record(partition: str, previous: AuditRecord | None, event: AuditEvent) -> AuditRecord:
    prev_hash = previous.hash if previous else GENESIS
    seq = previous.seq + 1 if previous else 1
    return AuditRecord(
        partition=partition,
        seq=seq,
        prev_hash=prev_hash,
        hash=record_hash(prev_hash, event),
        event=event,
    )


@dataclass(frozen=True, slots=True)
class ChainBreak:
    partition: str
    seq: int
    problem: str  # "hash_mismatch" | "missing_record" | "prev_hash_mismatch"


def verify_chain(records: Iterable[AuditRecord]) -> ChainBreak | None:
    """Recompute one partition's chain in order; return the first break, if any."""
    expected_prev, expected_seq = GENESIS, 1
    for record in records:
        if record.seq != expected_seq:
            return ChainBreak(record.partition, expected_seq, "missing_record")
        if record.prev_hash != expected_prev:
            return ChainBreak(record.partition, record.seq, "prev_hash_mismatch")
        if record_hash(record.prev_hash, record.event) != record.hash:
            return ChainBreak(record.partition, record.seq, "hash_mismatch")
        expected_prev, expected_seq = record.hash, record.seq + 1
    return None


def partition_of(event: AuditEvent) -> str:
    """One chain per tenant: tenants' evidence stays separable, chains stay short to verify."""
    return subjects.token(event.tenant)
