"""The pure core: hashing, chaining, checkpoints and verification of whole trails."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import msgspec
import pytest

from schemas.events import AuditEvent, AuditRecord, encode
from services.audit.canonical import canonical
from services.audit.chain import GENESIS, ChainCursor, extend, record_hash, unique_events, verify_chain
from services.audit.checkpoint import SealKey, check_seal, crosses_boundary
from services.audit.verify import ChainVerifier
from tests.audit.helpers import chain, checkpoint_of, event

KEY = SealKey.from_secret("auditor-and-audit-service-only")


class Limits(msgspec.Struct, kw_only=True):
    max_calls: int = 3
    scopes: list[str] = msgspec.field(default_factory=list)


class GrownEvent(AuditEvent, kw_only=True):
    """AuditEvent after a future release appended fields (with constant defaults, as the rule says)."""

    tool_call_id: str | None = None
    retries: int = 0
    limits: Limits = msgspec.field(default_factory=Limits)


class GrownRecord(AuditRecord, kw_only=True):
    event: GrownEvent
    region: str = "eu"


def test_hash_survives_appended_schema_fields() -> None:
    record = chain(1)[0]
    grown = msgspec.json.decode(encode(record), type=GrownRecord)
    assert record_hash(grown) == record.hash
    changed = msgspec.structs.replace(grown, event=msgspec.structs.replace(grown.event, retries=2))
    assert record_hash(changed) != record.hash


def test_canonical_form_leaves_out_defaults_only() -> None:
    text = canonical(event(1)).decode()
    assert '"rule_id"' not in text and '"entities"' not in text
    assert '"outcome":"routed"' in text and '"event_id"' in text


def test_legacy_v1_records_still_verify() -> None:
    ev = event(1)
    payload = GENESIS.encode() + b"\n" + msgspec.json.Encoder(order="sorted").encode(ev)
    legacy = AuditRecord(partition="acme", seq=1, prev_hash=GENESIS, hash=hashlib.sha256(payload).hexdigest(), event=ev)
    assert legacy.hash_version == 1
    assert verify_chain([legacy]) is None


def test_the_whole_record_is_covered_not_only_the_event() -> None:
    records = chain(3)
    records[1] = msgspec.structs.replace(records[1], recorded_at=records[1].recorded_at + timedelta(days=1))
    broken = verify_chain(records)
    assert broken is not None and (broken.seq, broken.problem) == (2, "hash_mismatch")


def test_a_batch_chains_in_order_and_duplicates_are_dropped() -> None:
    events = [event(i) for i in range(4)]
    unique = unique_events([*events, events[1]])
    assert [e.event_id for e in unique] == [e.event_id for e in events]
    records = extend("acme", None, unique)
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert verify_chain(records) is None


def test_a_fork_is_out_of_order() -> None:
    records = chain(3)
    fork = extend("acme", records[0], [event(99)])[0]
    cursor = ChainCursor("acme")
    assert [cursor.check(r) for r in records] == [None, None, None]
    broken = cursor.check(fork)
    assert broken is not None and (broken.seq, broken.problem) == (2, "out_of_order")


def test_checkpoint_pins_the_tail_against_truncation() -> None:
    records = chain(10)
    verifier = ChainVerifier([checkpoint_of(records[9])])
    for record in records[:8]:  # the newest two records were cut off
        verifier.add(record)
    report = verifier.finish()
    assert not report.ok
    first = report.partitions[0].first_break
    assert first is not None and (first.seq, first.problem) == (9, "missing_record")


def test_rewritten_chain_contradicts_its_checkpoint() -> None:
    records = chain(5)
    checkpoint = checkpoint_of(records[3], KEY)
    # A forger re-chains every record after altering record 2: the chain is consistent again,
    # but record 4's hash no longer matches the sealed checkpoint.
    altered = [records[0], *extend("acme", records[0], [msgspec.structs.replace(records[1].event, outcome="allow"),
                                                         *(r.event for r in records[2:])])]
    assert verify_chain(altered) is None
    verifier = ChainVerifier([checkpoint], key=KEY)
    for record in altered:
        verifier.add(record)
    first = verifier.finish().partitions[0].first_break
    assert first is not None and (first.seq, first.problem) == (4, "checkpoint_mismatch")


def test_seals() -> None:
    record = chain(1)[0]
    sealed, plain = checkpoint_of(record, KEY), checkpoint_of(record)
    assert check_seal(sealed, KEY) == "valid" and check_seal(plain, None) == "valid"
    assert check_seal(sealed, None) == "unverifiable"
    assert check_seal(plain, KEY) == "invalid", "with a key, an unkeyed checkpoint does not count"
    assert check_seal(sealed, SealKey.from_secret("another key")) == "invalid"
    forged = msgspec.structs.replace(sealed, head_hash="f" * 64)
    assert check_seal(forged, KEY) == "invalid"
    verifier = ChainVerifier([forged], key=KEY)
    verifier.add(record)
    first = verifier.finish().partitions[0].first_break
    assert first is not None and first.problem == "bad_seal"


def test_excerpt_verifies_from_its_anchor_checkpoint() -> None:
    records = chain(20)
    anchor = checkpoint_of(records[9], KEY)
    verifier = ChainVerifier([anchor, checkpoint_of(records[19], KEY)], key=KEY)
    for record in records[10:]:
        verifier.add(record)
    report = verifier.finish()
    assert report.ok and report.partitions[0].anchored_at == 10 and report.partitions[0].records == 10
    verifier = ChainVerifier([], key=KEY)
    for record in records[10:]:
        verifier.add(record)
    first = verifier.finish().partitions[0].first_break
    assert first is not None and (first.seq, first.problem) == (11, "unanchored")


def test_explicit_anchor_skips_what_it_vouches_for() -> None:
    records = chain(12)
    anchor = checkpoint_of(records[4])
    verifier = ChainVerifier([anchor], anchors={"acme": anchor})
    for record in records:
        verifier.add(record)
    report = verifier.finish()
    assert report.ok and report.partitions[0].records == 7 and report.partitions[0].anchored_at == 5


def test_duplicate_event_is_reported() -> None:
    records = chain(3)
    again = extend("acme", records[-1], [records[1].event])
    verifier = ChainVerifier()
    for record in [*records, *again]:
        verifier.add(record)
    first = verifier.finish().partitions[0].first_break
    assert first is not None and (first.seq, first.problem) == (4, "duplicate_event")


def test_partitions_are_verified_independently() -> None:
    a, b = chain(5, "a"), chain(5, "b")
    b[2] = msgspec.structs.replace(b[2], prev_hash="1" * 64)
    verifier = ChainVerifier()
    for x, y in zip(a, b, strict=True):
        verifier.add(x)
        verifier.add(y)
    report = verifier.finish()
    assert report.partitions[0].first_break is None
    broken = report.partitions[1].first_break
    assert broken is not None and (broken.partition, broken.seq, broken.problem) == ("b", 3, "prev_hash_mismatch")


@pytest.mark.parametrize(("before", "after", "every", "expected"),
                         [(0, 999, 1000, False), (999, 1000, 1000, True), (990, 2010, 1000, True), (5, 6, 0, False)])
def test_checkpoint_boundaries(before: int, after: int, every: int, expected: bool) -> None:
    assert crosses_boundary(before, after, every) is expected
