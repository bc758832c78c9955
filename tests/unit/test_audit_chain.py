from __future__ import annotations

import itertools

import msgspec
import pytest

from schemas.events import AuditEvent, AuditRecord, deadline_in
from services.audit.chain import GENESIS, next_record, partition_of, verify_chain


def event(i: int, tenant: str = "acme") -> AuditEvent:
    return AuditEvent(request_id=f"r{i}", correlation_id="c", deadline=deadline_in(1), tenant=tenant,
                      business_unit="bu", user_role="role", usecase_class="chat", stage="router", outcome="routed")


def chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        records.append(next_record("acme", records[-1] if records else None, event(i)))
    return records


def test_chain_links_records() -> None:
    records = chain(5)
    assert records[0].prev_hash == GENESIS and records[0].seq == 1
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert verify_chain(records) is None


def test_altered_record_is_detected() -> None:
    records = chain(5)
    records[2] = msgspec.structs.replace(records[2], event=msgspec.structs.replace(records[2].event, outcome="allow"))
    broken = verify_chain(records)
    assert broken is not None and (broken.seq, broken.problem) == (3, "hash_mismatch")


def test_removed_record_is_detected() -> None:
    records = chain(5)
    del records[3]
    broken = verify_chain(records)
    assert broken is not None and (broken.seq, broken.problem) == (4, "missing_record")


@pytest.mark.parametrize("tenant", ["acme.eu", "a b", "x>y"])
def test_partition_is_one_subject_token(tenant: str) -> None:
    partition = partition_of(event(0, tenant=tenant))
    assert partition and all(c.isalnum() or c in "-_" for c in partition)
