"""Booking without reading first (``LastWritten``) stays exact when someone else writes the
same ledger document in between — real KV, real compare-and-set."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.client import Client

from schemas.streams import KV_BUDGETS
from services.finops.ledger import Totals
from services.finops.store import LastWritten, change_totals, read_totals


def bump(totals: Totals) -> None:
    totals.requests += 1


@pytest.mark.asyncio
async def test_a_foreign_write_in_between_is_read_not_overwritten(nc: Client) -> None:
    js = nc.jetstream()
    kv = await js.key_value(KV_BUDGETS)
    ours, theirs = LastWritten(), LastWritten()
    for _ in range(3):
        await change_totals(kv, "tenant.acme", "EUR", bump, ours)
    assert ours.get("totals.tenant.acme") is not None
    await change_totals(kv, "tenant.acme", "EUR", bump, theirs)  # another worker, unknown to ours
    await change_totals(kv, "tenant.acme", "EUR", bump, ours)  # stale revision: CAS fails, re-read
    totals, revision = await read_totals(kv, "tenant.acme", "EUR")
    assert totals.requests == 5
    known = ours.get("totals.tenant.acme")
    assert known is not None and known[0] == revision
    assert msgspec.json.decode(known[1], type=Totals).requests == 5


def test_the_memory_is_bounded_least_recently_used_out() -> None:
    memory = LastWritten(capacity=2)
    memory.put("a", 1, b"{}")
    memory.put("b", 1, b"{}")
    assert memory.get("a") is not None  # a is now the most recently used
    memory.put("c", 1, b"{}")
    assert memory.get("b") is None and memory.get("a") is not None and memory.get("c") is not None
