"""Random and mutated events on every consumed subject of a real mesh (issue 18).

One fuzzing pass (tests/fuzz/bus_fuzz.py) is shared by the assertions below. The four
findings of the first run (invalid UTF-8 not dead-lettered, malformed events acked by the
batch consumers, an expired duplicate failed twice, dead-letter details quoting an enum
value) are fixed in the worker engine; their tests stay as regressions."""

from __future__ import annotations

from nats.aio.client import Client

from schemas.streams import CONSUMERS
from stellwerk.supervisor import Mesh
from tests.fuzz.bus_fuzz import BusTally, fuzz_bus

REQUEST_PATH = {c.durable for c in CONSUMERS if c.in_request_path}
_tally: list[BusTally] = []


async def tally_of(nc: Client) -> BusTally:
    if not _tally:
        _tally.append(await fuzz_bus(nc, seed=18))
    return _tally[0]


async def test_request_path_workers_dead_letter_every_malformed_event_with_a_reason(
    mesh: Mesh, nc: Client
) -> None:
    tally = await tally_of(nc)
    assert set(tally.published) == {c.durable for c in CONSUMERS}
    missing = [(c, kind) for c, kind in tally.missing if c in REQUEST_PATH and kind != "invalid_utf8"]
    assert missing == []
    assert tally.unreasoned == 0 and tally.duplicate_dead_letters == 0
    assert sum(tally.dead_lettered.values()) > 0 and sum(tally.handled.values()) > 0
    assert all(part.alive for part in mesh.parts), "no worker exited"


async def test_a_duplicated_live_request_yields_one_result(nc: Client) -> None:
    tally = await tally_of(nc)
    live = {r: n for r, n in tally.results.items() if r not in tally.expired_duplicates}
    assert live and all(n == 1 for n in live.values()), live


async def test_invalid_utf8_events_reach_the_dlq(nc: Client) -> None:
    tally = await tally_of(nc)
    assert [(c, kind) for c, kind in tally.missing if kind == "invalid_utf8"] == []


async def test_accounting_workers_dead_letter_every_malformed_event(nc: Client) -> None:
    tally = await tally_of(nc)
    assert [(c, kind) for c, kind in tally.missing if c not in REQUEST_PATH and kind != "invalid_utf8"] == []


async def test_a_duplicated_expired_request_yields_one_result(nc: Client) -> None:
    tally = await tally_of(nc)
    expired = {r: n for r, n in tally.results.items() if r in tally.expired_duplicates}
    assert expired and all(n == 1 for n in expired.values()), expired


async def test_dead_letter_details_never_quote_the_payload(nc: Client) -> None:
    tally = await tally_of(nc)
    assert tally.details_quoting_content == 0
