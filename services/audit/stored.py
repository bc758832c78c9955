"""A message as stored in the AUDIT stream, and its line in a JSONL replay or export.

One line per stored message, the payload embedded unchanged:
``{"seq": 42, "time": "…", "subject": "stellwerk.v1.audit.chain.acme", "kind": "record", "data": {…}}``
so a file can be verified like the stream it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec

from schemas import subjects

Kind = Literal["record", "checkpoint", "event", "other"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHAIN = subjects.AUDIT_CHAIN_PREFIX + "."
_CHECKPOINT = subjects.AUDIT_CHECKPOINT_PREFIX + "."
_AUDIT = subjects.AUDIT_PREFIX + "."


class StoredMsg(NamedTuple):
    subject: str
    seq: int  # stream sequence
    time_ns: int  # when the server stored it (server clock), ns since the epoch
    data: bytes


class _Line(msgspec.Struct):
    seq: int
    time: str
    subject: str
    kind: Kind
    data: msgspec.Raw


def kind_of(subject: str) -> Kind:
    if subject.startswith(_CHAIN):
        return "record"
    if subject.startswith(_CHECKPOINT):
        return "checkpoint"
    if subject.startswith(_AUDIT) and subject.count(".") == _AUDIT.count("."):
        return "event"
    return "other"


def partition_of_subject(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


def to_datetime(time_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=time_ns // 1000)


def to_ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def to_line(msg: StoredMsg) -> bytes:
    # Built by hand so the payload is copied, not decoded and re-encoded: replay stays fast.
    head = f'{{"seq":{msg.seq},"time":"{to_datetime(msg.time_ns).isoformat()}","subject":'
    tail = f',"kind":"{kind_of(msg.subject)}","data":'
    return head.encode() + _encode(msg.subject) + tail.encode() + msg.data + b"}\n"


_encode = msgspec.json.encode
_line_decoder = msgspec.json.Decoder(_Line)


def read_lines(path: Path) -> Iterator[StoredMsg]:
    """The stored messages of a JSONL replay/export file, in file order."""
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                line = _line_decoder.decode(raw)
                moment = datetime.fromisoformat(line.time)
                yield StoredMsg(line.subject, line.seq, to_ns(moment), bytes(line.data))
