"""Export files for auditors: JSONL (one stored message per line) or Parquet (the same, plus
the columns an analyst filters on). Both verify with ``stellwerk audit verify --file``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

from services.audit.stored import StoredMsg, kind_of, partition_of_subject, to_datetime, to_line, to_ns


class _Row(msgspec.Struct):
    """The flat view of a record or checkpoint; missing fields stay empty."""

    seq: int | None = None
    hash: str | None = None
    event: dict[str, Any] | None = None
    head_hash: str | None = None


_row = msgspec.json.Decoder(_Row)


class JsonlWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def __call__(self, msg: StoredMsg) -> None:
        self._handle.write(to_line(msg))


class ParquetWriter:
    """Collects rows and writes one Parquet file at the end (an export fits in memory)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._rows: list[dict[str, Any]] = []

    def __call__(self, msg: StoredMsg) -> None:
        row = _row.decode(msg.data)
        event = row.event or {}
        self._rows.append({
            "stream_seq": msg.seq,
            "stored_at": to_datetime(msg.time_ns),
            "subject": msg.subject,
            "kind": kind_of(msg.subject),
            "partition": partition_of_subject(msg.subject),
            "chain_seq": row.seq,
            "hash": row.hash or row.head_hash,
            "request_id": event.get("request_id"),
            "tenant": event.get("tenant"),
            "stage": event.get("stage"),
            "outcome": event.get("outcome"),
            "rule_id": event.get("rule_id"),
            "reason_code": event.get("reason_code"),
            "occurred_at": event.get("occurred_at"),
            "data": msg.data.decode(),
        })

    def close(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        schema = pa.schema([
            ("stream_seq", pa.int64()), ("stored_at", pa.timestamp("us", tz="UTC")), ("subject", pa.string()),
            ("kind", pa.string()), ("partition", pa.string()), ("chain_seq", pa.int64()), ("hash", pa.string()),
            ("request_id", pa.string()), ("tenant", pa.string()), ("stage", pa.string()), ("outcome", pa.string()),
            ("rule_id", pa.string()), ("reason_code", pa.string()), ("occurred_at", pa.string()), ("data", pa.string()),
        ])
        pq.write_table(pa.Table.from_pylist(self._rows, schema=schema), self._path, compression="zstd")


def read_parquet(path: Path) -> Iterator[StoredMsg]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["subject", "stream_seq", "stored_at", "data"])
    for row in table.to_pylist():
        yield StoredMsg(row["subject"], row["stream_seq"], to_ns(row["stored_at"]), row["data"].encode())
