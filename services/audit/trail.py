"""Reading the audit trail for the ``stellwerk audit`` commands: from a stream or a file.

Thin: selection, chain rules and verification are the pure modules; this wires them to
``reader.scan`` (a stream: the live AUDIT or any copy of it) or ``stored.read_lines`` (an
export).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.events import AuditCheckpoint, AuditRecord
from services.audit.checkpoint import VerifyingKey
from services.audit.query import Selection
from services.audit.reader import scan
from services.audit.stored import StoredMsg, kind_of, partition_of_subject, read_lines, to_ns
from services.audit.verify import ChainVerifier, VerifyReport

_record = msgspec.json.Decoder(AuditRecord)
_checkpoint = msgspec.json.Decoder(AuditCheckpoint)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    checkpoint: AuditCheckpoint
    msg: StoredMsg


def _chain_subject(partition: str | None) -> str:
    return subjects.audit_chain(partition) if partition else subjects.AUDIT_CHAIN_ALL


def _checkpoint_subject(partition: str | None) -> str:
    return subjects.audit_checkpoint(partition) if partition else subjects.AUDIT_CHECKPOINT_ALL


async def checkpoints(
    js: JetStreamContext, stream: str, partition: str | None = None, malformed: list[StoredMsg] | None = None
) -> list[StoredCheckpoint]:
    """Every checkpoint stored; ``malformed`` collects messages that are none."""
    found: list[StoredCheckpoint] = []

    def keep(msg: StoredMsg) -> bool:
        try:
            found.append(StoredCheckpoint(_checkpoint.decode(msg.data), msg))
        except msgspec.DecodeError:  # ValidationError is a DecodeError
            if malformed is not None:
                malformed.append(msg)
        return True

    await scan(js, stream, _checkpoint_subject(partition), keep)
    return found


def _feed(verifier: ChainVerifier, msg: StoredMsg) -> None:
    try:
        record = _record.decode(msg.data)
    except msgspec.DecodeError:
        verifier.add_malformed(partition_of_subject(msg.subject), "record")
        return
    verifier.add(record)


def anchors_before(found: list[StoredCheckpoint], moment: datetime) -> dict[str, StoredCheckpoint]:
    """Per partition, the newest checkpoint stored at or before ``moment``."""
    limit = to_ns(moment)
    anchors: dict[str, StoredCheckpoint] = {}
    for item in found:
        if item.msg.time_ns <= limit:
            known = anchors.get(item.checkpoint.partition)
            if known is None or item.checkpoint.seq > known.checkpoint.seq:
                anchors[item.checkpoint.partition] = item
    return anchors


async def partitions(js: JetStreamContext, stream: str) -> list[str]:
    info = await js.stream_info(stream, subjects_filter=subjects.AUDIT_CHAIN_ALL)
    return sorted(partition_of_subject(s) for s in (info.state.subjects or {}))


async def _anchor_holds(js: JetStreamContext, stream: str, anchor: AuditCheckpoint) -> bool:
    """Is the anchor's head record where the checkpoint says? (Not in a copy with other sequences.)"""
    try:
        raw = await js.get_msg(stream, anchor.head_stream_seq)
    except NotFoundError:
        return False
    if raw.subject != subjects.audit_chain(anchor.partition):
        return False
    try:
        record = _record.decode(raw.data or b"")
    except msgspec.DecodeError:
        return False  # the full read will report it
    return record.seq == anchor.seq and record.hash == anchor.head_hash


async def verify_stream(
    js: JetStreamContext,
    stream: str,
    *,
    partition: str | None = None,
    since: datetime | None = None,
    key: VerifyingKey | None = None,
) -> VerifyReport:
    """Recompute the chains in ``stream``: all of them, or from the checkpoint before ``since``."""
    malformed: list[StoredMsg] = []
    found = await checkpoints(js, stream, partition, malformed)
    anchors = anchors_before(found, since) if since else {}
    verifier = ChainVerifier((c.checkpoint for c in found), key=key,
                             anchors={p: a.checkpoint for p, a in anchors.items()})
    for msg in malformed:
        verifier.add_malformed(partition_of_subject(msg.subject), "checkpoint")

    def add(msg: StoredMsg) -> bool:
        _feed(verifier, msg)
        return True

    if not anchors:
        await scan(js, stream, _chain_subject(partition), add)
        return verifier.finish()
    for name in [partition] if partition else await partitions(js, stream):
        anchor = anchors.get(name)
        start = None
        if anchor is not None and await _anchor_holds(js, stream, anchor.checkpoint):
            start = anchor.checkpoint.head_stream_seq
        # Without a usable anchor the partition is read from its first record; the verifier
        # skips records before an anchor it was given.
        await scan(js, stream, subjects.audit_chain(name), add, start_seq=start)
    return verifier.finish()


def stored_in_file(path: Path) -> Iterator[StoredMsg]:
    if path.suffix == ".parquet":
        from services.audit.export import read_parquet  # pyarrow only when asked for

        return read_parquet(path)
    return read_lines(path)


def verify_file(path: Path, *, partition: str | None = None, key: VerifyingKey | None = None) -> VerifyReport:
    """Verify an export: checkpoints in a first pass, records in a second (a file can be re-read)."""

    def wanted(msg: StoredMsg, kind: str) -> bool:
        return kind_of(msg.subject) == kind and (partition is None or partition_of_subject(msg.subject) == partition)

    verifier = ChainVerifier(key=key)
    for msg in stored_in_file(path):
        if wanted(msg, "checkpoint"):
            try:
                verifier.add_checkpoint(_checkpoint.decode(msg.data), key)
            except msgspec.DecodeError:
                verifier.add_malformed(partition_of_subject(msg.subject), "checkpoint")
    for msg in stored_in_file(path):
        if wanted(msg, "record"):
            _feed(verifier, msg)
    return verifier.finish()


async def replay(
    js: JetStreamContext, stream: str, subject: str, selection: Selection, emit: Callable[[StoredMsg], None]
) -> int:
    """Emit every stored message on ``subject`` in the selection, in stream order."""
    until_ns = selection.until_ns
    count = 0

    def on_message(msg: StoredMsg) -> bool:
        nonlocal count
        verdict = selection.verdict(msg, until_ns)
        if verdict == "keep":
            emit(msg)
            count += 1
        return verdict != "stop"

    await scan(js, stream, subject, on_message, start_time=selection.since)
    return count


async def request_records(
    js: JetStreamContext, stream: str, request_id: str, selection: Selection
) -> list[AuditRecord]:
    """Every chained record of one request within the selection (a scan: no index by request)."""
    needle = request_id.encode()
    found: list[AuditRecord] = []

    def keep(msg: StoredMsg) -> None:
        if needle in msg.data:  # cheap pre-filter before decoding
            try:
                record = _record.decode(msg.data)
            except msgspec.DecodeError:
                return  # not a record: ``verify`` reports it
            if record.event.request_id == request_id:
                found.append(record)

    subject = _chain_subject(subjects.token(selection.tenant) if selection.tenant else None)
    await replay(js, stream, subject, selection, keep)
    return found


async def export_messages(
    js: JetStreamContext, stream: str, selection: Selection, emit: Callable[[StoredMsg], None]
) -> tuple[int, int]:
    """Records and checkpoints of the selection, each partition extended back to the checkpoint
    before ``since`` (or to its first record), so that the export verifies on its own."""
    partition = subjects.token(selection.tenant) if selection.tenant else None
    found = await checkpoints(js, stream, partition)
    anchors = anchors_before(found, selection.since) if selection.since else {}
    until_ns = selection.until_ns
    emitted_checkpoints = 0
    for item in found:
        anchor = anchors.get(item.checkpoint.partition)
        in_window = selection.since is None or item.msg.time_ns >= to_ns(selection.since)
        if (in_window or item is anchor) and (until_ns is None or item.msg.time_ns <= until_ns):
            emit(item.msg)
            emitted_checkpoints += 1
    records = 0

    def keep(msg: StoredMsg) -> bool:
        nonlocal records
        if until_ns is not None and msg.time_ns > until_ns:
            return False
        emit(msg)
        records += 1
        return True

    for name in [partition] if partition else await partitions(js, stream):
        anchor = anchors.get(name)
        usable = anchor is not None and await _anchor_holds(js, stream, anchor.checkpoint)
        start = anchor.checkpoint.head_stream_seq + 1 if anchor is not None and usable else None
        await scan(js, stream, subjects.audit_chain(name), keep, start_seq=start)
    return records, emitted_checkpoints
