"""Rebuild KV ``budgets`` exactly from the USAGE stream (after a loss of the KV, or to check it).

Budget definitions come from the config, overlaid by the audited run-time changes (AUDIT
``stellwerk.v1.audit.finops``: ``budget_set``, ``budget_reset``). Totals come from replaying
USAGE, each call counted once by call id, priced with the same dated price table.

Safe while FinOps workers run: a rebuilt document is written with compare-and-set and a
``floor`` at the last stream seq it reflects, so a worker later skips those events. If the
live document already reflects events past what was read (its floor or journal is higher),
the rebuild reads on to there first and includes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from schemas.events import utcnow
from schemas.streams import KV_BUDGETS
from services.finops.ledger import (
    Budget,
    BudgetDef,
    BudgetReset,
    Replay,
    StateDoc,
    Totals,
    evaluate,
    index_budgets,
    new_totals,
    scope_state,
    totals_key,
)
from services.finops.pricing import PriceBook
from services.finops.replay import read_budget_trail, read_usage
from services.finops.store import (
    CAS_ATTEMPTS,
    Contention,
    budget_key,
    list_keys,
    read_totals,
    reset_key,
    write_if_unchanged,
    write_state,
)


@dataclass
class Rebuilt:
    """What a replay of the stream says the KV must hold."""

    definitions: dict[str, BudgetDef]
    resets: dict[str, BudgetReset]
    totals: dict[str, Totals]
    states: dict[str, StateDoc]
    through: int
    events: int
    duplicates: int
    written: list[str] = field(default_factory=list)


class Rebuilder:
    """``prices``: the dated price table (in the platform's currency); ``seeds``: the config's
    budgets (``store.config_budgets``), under the audited run-time changes; ``tz``: where
    budget days and months begin (the platform's ``finops_timezone``)."""

    def __init__(
        self, js: JetStreamContext, prices: PriceBook, seeds: Sequence[BudgetDef], tz: tzinfo,
        now: datetime | None = None,
    ) -> None:
        self.js = js
        self.currency = prices.currency
        self.seeds = list(seeds)
        self.tz = tz
        self.prices = prices
        self.replay = Replay(self.currency, self.tz)
        self.now = now or utcnow()
        self.events = 0
        self.index: dict[str, list[Budget]] = {}

    async def read(self, start_seq: int | None = None) -> None:
        async for seq, usage in read_usage(self.js, start_seq=start_seq):
            self.events += 1
            self.replay.add(seq, usage, self.prices.charge(usage))

    def document(self, key: str) -> Totals:
        """The rebuilt document of one scope, as of everything read so far."""
        found = self.replay.docs.get(key)
        doc = msgspec.json.decode(msgspec.json.encode(found), type=Totals) if found else new_totals(
            key, self.currency
        )
        doc.floor, doc.journal, doc.outbox, doc.marks = self.replay.through, {}, [], {}
        evaluate(doc, self.index.get(key, []), self.now, self.tz)
        return doc

    async def compute(self) -> Rebuilt:
        definitions, resets = await read_budget_trail(self.js, self.seeds)
        self.index = index_budgets(definitions.values(), resets)
        await self.read()
        keys = set(self.replay.docs) | set(self.index)
        totals = {key: self.document(key) for key in keys}
        states = {
            key: state
            for key in keys
            if (state := scope_state(totals[key], self.index.get(key, []), self.now, self.tz, 0)) is not None
        }
        return Rebuilt(definitions, resets, totals, states, self.replay.through, self.events, self.replay.duplicates)

    async def write(self, rebuilt: Rebuilt) -> Rebuilt:
        kv = await self.js.key_value(KV_BUDGETS)
        for definition in rebuilt.definitions.values():
            await _restore(kv, budget_key(definition.budget_id), msgspec.json.encode(definition))
        for reset in rebuilt.resets.values():
            await _restore(kv, reset_key(reset.budget_id), msgspec.json.encode(reset))
        live_keys = {k.removeprefix("totals.") for k in await list_keys(kv) if k.startswith("totals.")}
        for key in sorted(set(rebuilt.totals) | live_keys):
            await self._write_one(kv, key, rebuilt)
            rebuilt.written.append(key)
        return rebuilt

    async def _write_one(self, kv: KeyValue, key: str, rebuilt: Rebuilt) -> None:
        for _ in range(CAS_ATTEMPTS):
            live, revision = await read_totals(kv, key, self.currency)
            reflected = max([live.floor, *(s for e in live.journal.values() for s in e.seqs)]) if revision else 0
            if reflected > self.replay.through:
                await self.read(start_seq=self.replay.through + 1)
            doc = self.document(key)
            doc.outbox = live.outbox  # crossings a worker recorded but has not yet published
            written = await write_if_unchanged(kv, totals_key(key), msgspec.json.encode(doc), revision)
            if written is None:
                continue
            rebuilt.totals[key] = doc
            state = scope_state(doc, self.index.get(key, []), self.now, self.tz, written)
            if state is not None:
                rebuilt.states[key] = state
                await write_state(kv, key, state)
            return
        raise Contention(key)


async def _restore(kv: KeyValue, key: str, value: bytes) -> None:
    """Put a definition back if the KV lost it (one that is there stays as it is)."""
    try:
        await kv.get(key)
    except KeyNotFoundError:
        await write_if_unchanged(kv, key, value, None)


async def live_documents(js: JetStreamContext, currency: str) -> tuple[dict[str, Totals], dict[str, StateDoc]]:
    """What KV ``budgets`` holds now (for comparing with a rebuild)."""
    kv = await js.key_value(KV_BUDGETS)
    totals: dict[str, Totals] = {}
    states: dict[str, StateDoc] = {}
    for kv_key in await list_keys(kv):
        kind, _, key = kv_key.partition(".")
        if kind == "totals":
            totals[key], _ = await read_totals(kv, key, currency)
        elif kind == "state":
            try:
                states[key] = msgspec.json.decode((await kv.get(kv_key)).value or b"{}", type=StateDoc)
            except (KeyNotFoundError, msgspec.ValidationError):
                continue
    return totals, states


def differences(expected: Rebuilt, totals: dict[str, Totals], states: dict[str, StateDoc]) -> list[str]:
    """Scope keys whose live totals or state differ from the rebuild (ignoring timestamps)."""
    diffs = []
    for key in sorted(set(expected.totals) | set(totals)):
        a, b = expected.totals.get(key), totals.get(key)
        if a is None or b is None or a.comparable() != b.comparable():
            diffs.append(f"totals.{key}")
    for key in sorted(set(expected.states) | set(states)):
        if _state_view(expected.states.get(key)) != _state_view(states.get(key)):
            diffs.append(f"state.{key}")
    return diffs


def _state_view(state: StateDoc | None) -> dict[str, object] | None:
    if state is None:
        return None
    data: dict[str, object] = msgspec.to_builtins(state)
    data.pop("updated_at")
    data.pop("source_revision")
    return data
