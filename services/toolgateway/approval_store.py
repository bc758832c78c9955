"""Approvals in KV ``approvals``: ``call.<id>`` holds the ``ApprovalRecord``, ``args.<id>``
the call's arguments until the call ends (then purged with their history). Every state
change is a compare-and-set on the record's revision, so of several workers racing to
decide, expire or finish one approval exactly one wins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from services.toolgateway.approvals import ApprovalRecord, Rejection

RECORD_PREFIX: Final = "call."
ARGS_PREFIX: Final = "args."
CAS_ATTEMPTS: Final = 16

_decoder = msgspec.json.Decoder(ApprovalRecord)


def record_key(approval_id: str) -> str:
    return f"{RECORD_PREFIX}{approval_id}"


def decode_record(data: bytes) -> ApprovalRecord:
    return _decoder.decode(data)


class ApprovalStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def create(self, record: ApprovalRecord, arguments: dict[str, Any]) -> None:
        # Arguments first: a record that exists always has its arguments.
        await self.kv.put(f"{ARGS_PREFIX}{record.approval_id}", msgspec.json.encode(arguments))
        await self.kv.create(record_key(record.approval_id), msgspec.json.encode(record))

    async def get(self, approval_id: str) -> tuple[ApprovalRecord, int] | None:
        try:
            entry = await self.kv.get(record_key(approval_id))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return decode_record(entry.value), entry.revision

    async def arguments(self, approval_id: str) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(f"{ARGS_PREFIX}{approval_id}")
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        value = msgspec.json.decode(entry.value)
        return value if isinstance(value, dict) else None

    async def forget_arguments(self, approval_id: str) -> None:
        await self.kv.purge(f"{ARGS_PREFIX}{approval_id}")

    async def forget(self, approval_id: str) -> None:
        await self.kv.purge(record_key(approval_id))
        await self.forget_arguments(approval_id)

    async def transition(
        self, approval_id: str, change: Callable[[ApprovalRecord], ApprovalRecord | Rejection]
    ) -> ApprovalRecord | Rejection:
        """Apply ``change`` to the current record and write it if nobody wrote in between."""
        for _ in range(CAS_ATTEMPTS):
            found = await self.get(approval_id)
            if found is None:
                return Rejection("not_found")
            record, revision = found
            outcome = change(record)
            if isinstance(outcome, Rejection):
                return outcome
            try:
                await self.kv.update(record_key(approval_id), msgspec.json.encode(outcome), last=revision)
            except KeyWrongLastSequenceError:
                continue  # someone else changed it: decide again on what they wrote
            return outcome
        return Rejection("contended")

    async def records(self) -> list[ApprovalRecord]:
        """Every approval record (for ``stellwerk approvals list``)."""
        try:
            # nats-py's key filters are substring matches, not subject patterns: filter here.
            keys = [key for key in await self.kv.keys() if key.startswith(RECORD_PREFIX)]
        except NoKeysError:
            return []
        out: list[ApprovalRecord] = []
        for key in keys:
            found = await self.get(key.removeprefix(RECORD_PREFIX))
            if found is not None:
                out.append(found[0])
        return out
