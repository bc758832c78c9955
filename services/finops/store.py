"""The ledger in KV ``budgets``: compare-and-set updates, state projection, alert outbox.

Thin I/O around ``ledger``: read a document and its revision, let a pure function change
it, write it back only if nobody else did in between (else read again and redo).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Final, TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.events import AuditEvent, FinopsAlert, utcnow
from schemas.vocabulary import Stage
from services.finops.ledger import (
    Budget,
    BudgetDef,
    BudgetReset,
    Crossing,
    IdFactory,
    Priced,
    StateDoc,
    Totals,
    apply_batch,
    evaluate,
    new_totals,
    scope_state,
    state_key,
    totals_key,
)
from services.finops.settings import BudgetConfig

CAS_ATTEMPTS: Final = 50
FINOPS_STAGE: Final[Stage] = "finops"

T = TypeVar("T")
Publish = Callable[[str, msgspec.Struct, str], Awaitable[object]]


class Contention(RuntimeError):
    """A document changed under us more than ``CAS_ATTEMPTS`` times in a row."""


async def read_totals(kv: KeyValue, key: str, currency: str) -> tuple[Totals, int | None]:
    try:
        entry = await kv.get(totals_key(key))
    except KeyNotFoundError:
        return new_totals(key, currency), None
    if not entry.value:
        return new_totals(key, currency), entry.revision
    return msgspec.json.decode(entry.value, type=Totals), entry.revision


async def write_if_unchanged(kv: KeyValue, kv_key: str, value: bytes, revision: int | None) -> int | None:
    """Create or update ``kv_key`` if its revision is still ``revision``; the new one, or None."""
    try:
        if revision is None:
            return await kv.create(kv_key, value)
        return await kv.update(kv_key, value, last=revision)
    except KeyWrongLastSequenceError:  # also what create() raises for an existing key
        return None


class LastWritten:
    """What this worker last wrote per KV key (revision and value), so the next update of a
    document it owns can go straight to the compare-and-set without reading it first.

    Correct whatever others do: a write by anyone else has moved the revision, the
    compare-and-set fails, the entry is dropped and the loop reads afresh. With one worker
    per scope (the common case) this halves the KV round trips of a booking.

    Bounded (least recently used out): scopes per end user make the set of documents
    unbounded, and a forgotten entry only costs one read."""

    def __init__(self, capacity: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._capacity = capacity

    def get(self, kv_key: str) -> tuple[int, bytes] | None:
        entry = self._entries.get(kv_key)
        if entry is not None:
            self._entries.move_to_end(kv_key)
        return entry

    def put(self, kv_key: str, revision: int, value: bytes) -> None:
        self._entries[kv_key] = (revision, value)
        self._entries.move_to_end(kv_key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def drop(self, kv_key: str) -> None:
        self._entries.pop(kv_key, None)


async def change_totals(
    kv: KeyValue, key: str, currency: str, mutate: Callable[[Totals], T], written_by_us: LastWritten | None = None
) -> tuple[Totals, int, T]:
    """Compare-and-set loop: ``mutate`` a fresh copy until the write wins."""
    kv_key = totals_key(key)
    for _ in range(CAS_ATTEMPTS):
        known = written_by_us.get(kv_key) if written_by_us is not None else None
        if known is not None:
            revision: int | None = known[0]
            totals = msgspec.json.decode(known[1], type=Totals)
        else:
            totals, revision = await read_totals(kv, key, currency)
        result = mutate(totals)
        value = msgspec.json.encode(totals)
        written = await write_if_unchanged(kv, kv_key, value, revision)
        if written is not None:
            if written_by_us is not None:
                written_by_us.put(kv_key, written, value)
            return totals, written, result
        if written_by_us is not None:
            written_by_us.drop(kv_key)
    raise Contention(key)


async def write_state(
    kv: KeyValue, key: str, state: StateDoc | None, written_by_us: LastWritten | None = None
) -> None:
    """Write ``state.<key>`` unless a state derived from a newer totals revision is there."""
    if state is None:
        return
    kv_key = state_key(key)
    for _ in range(CAS_ATTEMPTS):
        known = written_by_us.get(kv_key) if written_by_us is not None else None
        revision: int | None
        current: StateDoc | None
        if known is not None:
            revision, current = known[0], msgspec.json.decode(known[1], type=StateDoc)
        else:
            try:
                entry = await kv.get(kv_key)
                revision = entry.revision
                current = msgspec.json.decode(entry.value or b"{}", type=StateDoc) if entry.value else None
            except KeyNotFoundError:
                current, revision = None, None
            except msgspec.ValidationError:
                current, revision = None, entry.revision
        if current is not None and current.source_revision >= state.source_revision:
            return
        value = msgspec.json.encode(state)
        written = await write_if_unchanged(kv, kv_key, value, revision)
        if written is not None:
            if written_by_us is not None:
                written_by_us.put(kv_key, written, value)
            return
        if written_by_us is not None:
            written_by_us.drop(kv_key)
    raise Contention(kv_key)


def alert_of(crossing: Crossing) -> FinopsAlert:
    return FinopsAlert(
        request_id=crossing.request_id,
        correlation_id=crossing.correlation_id,
        occurred_at=crossing.occurred_at,
        deadline=crossing.occurred_at,
        tenant=crossing.tenant,
        business_unit=crossing.business_unit,
        user_role=crossing.user_role,
        usecase_class=crossing.usecase_class,
        budget_id=crossing.budget_id,
        threshold_pct=crossing.threshold_pct,
        consumed=crossing.consumed,
        limit=crossing.limit,
        currency=crossing.currency,
        action=crossing.action if crossing.level == "exhausted" else "warn",
    )


def audit_of(crossing: Crossing) -> AuditEvent:
    return AuditEvent(
        event_id=crossing.crossing_id,
        request_id=crossing.request_id,
        correlation_id=crossing.correlation_id,
        deadline=crossing.occurred_at,
        tenant=crossing.tenant,
        business_unit=crossing.business_unit,
        user_role=crossing.user_role,
        usecase_class=crossing.usecase_class,
        stage=FINOPS_STAGE,
        outcome=f"budget_{crossing.level}",
        rule_id=f"budget.{crossing.budget_id}",
        cost=crossing.consumed,
        attributes={
            "budget_id": crossing.budget_id,
            "scope": crossing.scope,
            "scope_id": crossing.scope_id,
            "period": crossing.period,
            "threshold_pct": f"{crossing.threshold_pct:g}",
            "limit": f"{crossing.limit:g}",
            "currency": crossing.currency,
            "action": crossing.action,
        },
    )


@dataclass
class Outcome:
    key: str
    totals: Totals
    revision: int
    counted: list[Priced] = field(default_factory=list)


class LedgerStore:
    """One worker's view of the ledger documents."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        currency: str,
        tz: tzinfo,
        incarnation: str,
        budgets_of: Callable[[str], Sequence[Budget]],
        publish: Publish,
        clock: Callable[[], datetime] = utcnow,
        new_id: IdFactory | None = None,
    ) -> None:
        self.kv = kv
        self.currency = currency
        self.tz = tz
        self.incarnation = incarnation
        self.budgets_of = budgets_of
        self.publish = publish
        self.clock = clock
        self.new_id = new_id or IdFactory()
        self.written = LastWritten()

    async def apply(self, key: str, items: Sequence[Priced], *, batch: int, ack_floor: int) -> Outcome:
        budgets = self.budgets_of(key)

        def mutate(totals: Totals) -> list[Priced]:
            return apply_batch(
                totals, items, incarnation=self.incarnation, batch=batch, ack_floor=ack_floor,
                budgets=budgets, now=self.clock(), tz=self.tz, new_id=self.new_id,
            )

        totals, revision, counted = await change_totals(self.kv, key, self.currency, mutate, self.written)
        return Outcome(key, totals, revision, counted)

    async def touch(self, key: str) -> Outcome:
        """Re-evaluate a scope without new usage (budget changed, period rolled over)."""
        budgets = self.budgets_of(key)

        def mutate(totals: Totals) -> None:
            evaluate(totals, budgets, self.clock(), self.tz, new_id=self.new_id)

        totals, revision, _ = await change_totals(self.kv, key, self.currency, mutate, self.written)
        return Outcome(key, totals, revision)

    async def settle(self, outcome: Outcome) -> None:
        """After a write: publish its crossings, then project the router's state."""
        if outcome.totals.outbox:
            await self.flush_outbox(outcome.key, outcome.totals.outbox)
        budgets = self.budgets_of(outcome.key)
        if budgets:
            state = scope_state(outcome.totals, budgets, self.clock(), self.tz, outcome.revision)
            await write_state(self.kv, outcome.key, state, self.written)

    async def drop_state(self, key: str) -> None:
        self.written.drop(state_key(key))
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.get(state_key(key))
            await self.kv.delete(state_key(key))

    async def flush_outbox(self, key: str, pending: Sequence[Crossing]) -> None:
        """Publish each crossing (idempotent by its id), then drop it from the outbox."""
        await asyncio.gather(*(
            job
            for crossing in pending
            for job in (
                self.publish(subjects.FINOPS_ALERT, alert_of(crossing), f"finops-alert:{crossing.crossing_id}"),
                self.publish(subjects.audit(FINOPS_STAGE), audit_of(crossing), f"audit:finops:{crossing.crossing_id}"),
            )
        ))
        done = {c.crossing_id for c in pending}

        def drop(totals: Totals) -> None:
            totals.outbox = [c for c in totals.outbox if c.crossing_id not in done]

        await change_totals(self.kv, key, self.currency, drop, self.written)


# --- budget definitions ------------------------------------------------------------------------


def budget_key(budget_id: str) -> str:
    return f"budget.{budget_id}"


def reset_key(budget_id: str) -> str:
    return f"reset.{budget_id}"


class BudgetBook:
    """Budget definitions and resets in force, kept current from KV by a watch."""

    def __init__(self) -> None:
        self.definitions: dict[str, BudgetDef] = {}
        self.resets: dict[str, BudgetReset] = {}
        self.dirty: set[str] = set()  # scope keys to re-evaluate
        self._index: dict[str, list[Budget]] | None = None

    def budgets_of(self, key: str) -> list[Budget]:
        return self.index().get(key, [])

    def index(self) -> dict[str, list[Budget]]:
        if self._index is None:
            index: dict[str, list[Budget]] = {}
            for definition in self.definitions.values():
                index.setdefault(definition.scope_key, []).append(
                    (definition, self.resets.get(definition.budget_id))
                )
            self._index = index
        return self._index

    def add_missing(self, definitions: Sequence[BudgetDef]) -> None:
        """Definitions not (yet) in KV, e.g. config budgets no worker has seeded."""
        for definition in definitions:
            self.definitions.setdefault(definition.budget_id, definition)
        self._index = None

    def apply(self, kv_key: str, value: bytes | None) -> None:
        """A KV change of ``budget.<id>`` or ``reset.<id>`` (None: deleted)."""
        kind, _, budget_id = kv_key.partition(".")
        old = self.definitions.get(budget_id)
        if old is not None:
            self.dirty.add(old.scope_key)
        try:
            if kind == "budget":
                if value:
                    definition = msgspec.json.decode(value, type=BudgetDef)
                    self.definitions[budget_id] = definition
                    self.dirty.add(definition.scope_key)
                else:
                    self.definitions.pop(budget_id, None)
            elif kind == "reset":
                if value:
                    self.resets[budget_id] = msgspec.json.decode(value, type=BudgetReset)
                else:
                    self.resets.pop(budget_id, None)
        except msgspec.DecodeError:
            return  # a malformed entry changes nothing
        finally:
            self._index = None


async def load_budget_book(kv: KeyValue) -> BudgetBook:
    book = BudgetBook()
    for kv_key in await list_keys(kv):
        if kv_key.startswith(("budget.", "reset.")):
            try:
                entry = await kv.get(kv_key)
            except KeyNotFoundError:
                continue
            book.apply(kv_key, entry.value)
    return book


async def list_keys(kv: KeyValue) -> list[str]:
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []


async def seed_budgets(kv: KeyValue, seeds: Sequence[BudgetDef]) -> None:
    """Install config budgets; one set at run time (``source: cli``) stays as it is."""
    for seed in seeds:
        key = budget_key(seed.budget_id)
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await kv.get(key)
                current = msgspec.json.decode(entry.value, type=BudgetDef) if entry.value else None
                revision: int | None = entry.revision
            except KeyNotFoundError:
                current, revision = None, None
            if current is not None and (current.source == "cli" or current.same_terms(seed)):
                break
            if await write_if_unchanged(kv, key, msgspec.json.encode(seed), revision) is not None:
                break


def config_budgets(budgets: Sequence[BudgetConfig], currency: str) -> list[BudgetDef]:
    """The config's budgets (``FinOpsConfig.budgets``) as definitions, in the platform's currency."""
    return [
        BudgetDef(
            budget_id=b.id, scope=b.scope, scope_id=b.scope_id, period=b.period, limit=b.limit,
            warn_pct=b.warn_pct, act_pct=b.act_pct, action=b.action, currency=currency, source="config",
        )
        for b in budgets
    ]
