"""Typed documents in a JetStream KV bucket, updated by compare-and-set.

Several workers (rate limiters, quota counters, budget ledgers) keep shared state in KV and
must not lose each other's updates: read the document and its revision, decide, then write
only if nobody wrote in between; on a lost race, decide again on fresh state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

S = TypeVar("S", bound=msgspec.Struct)


async def read_doc(kv: KeyValue, key: str, type_: type[S], empty: Callable[[], S]) -> tuple[S, int | None]:
    """The document and its revision; ``empty()`` and None when the key does not exist.

    A malformed entry also reads as ``empty()`` (with its revision, so the next write
    replaces it): corrupt shared state must not wedge every writer.
    """
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return empty(), None
    try:
        return msgspec.json.decode(entry.value or b"{}", type=type_), entry.revision
    except msgspec.DecodeError:
        return empty(), entry.revision


async def write_doc(kv: KeyValue, key: str, doc: msgspec.Struct, revision: int | None) -> int | None:
    """Write if the key is still at ``revision`` (None: does not exist yet). The new revision
    (a positive number, so truthy), or None if someone else wrote first."""
    data = msgspec.json.encode(doc)
    try:
        if revision is None:
            return await kv.create(key, data)
        return await kv.update(key, data, last=revision)
    except KeyWrongLastSequenceError:
        return None
