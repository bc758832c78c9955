"""Running totals per scope, applied exactly once; budget levels and threshold crossings.

Pure and synchronous: the bus shell reads a ``Totals`` document from KV, calls these
functions, and writes it back with compare-and-set on the revision it read.

One document per scope key (``tenant.<id>``, ``business_unit.<id>``, ``usecase.<id>``,
``endpoint.<route>``, ``endpoint.<deployment>``, ``end_user.<hash>`` for calls with an end user) holds all-time totals, the current day's
and month's, the budget levels reached in the current period (``marks``) and the threshold
crossings not yet published (``outbox``).

Exactly once, also with several workers and across restarts:

* a *redelivered* message is recognised by its USAGE stream sequence: every seq at or below
  ``floor`` (the consumer's ack floor, or a rebuild point) is already reflected, and
  ``journal`` lists, per worker incarnation, the seqs of its latest batch above the floor —
  the only ones that can come back, because a worker fetches its next batch only after the
  acks of the previous one reached the server. The journal stays small whatever the rate;
* a call *published twice* (a producer retrying after JetStream's duplicate window) is
  recognised by its call id among the document's last ``RECENT_IDS`` calls;
* the compare-and-set makes two workers that race on one document serialise.

Money and GPU time are integers (nano-units, microseconds), so totals do not depend on the
order events arrive in, and a rebuild from the stream reproduces them exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final, Literal, get_args

import msgspec

from schemas import subjects
from schemas.events import UsageRecorded, utcnow
from schemas.kv import BudgetAction, BudgetLevel, BudgetPeriod, BudgetScope, BudgetState
from schemas.vocabulary import Ident, Timestamp, UsecaseClass
from services.finops.pricing import MICRO, NANO, Charge

RECENT_IDS: Final = 1024
SCOPES: Final[tuple[BudgetScope, ...]] = get_args(BudgetScope)
LEVELS: Final[tuple[BudgetLevel, ...]] = ("ok", "warn", "exhausted")
Source = Literal["config", "cli"]


# --- documents -------------------------------------------------------------------------------


class Counters(msgspec.Struct, kw_only=True):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_us: int = 0
    cost_nanos: int = 0

    def add(self, usage: UsageRecorded, charge: Charge) -> None:
        self.requests += 1
        self.prompt_tokens += usage.usage.prompt_tokens
        self.completion_tokens += usage.usage.completion_tokens
        self.gpu_us += charge.gpu_us
        self.cost_nanos += charge.cost_nanos

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return self.cost_nanos / NANO

    @property
    def gpu_seconds(self) -> float:
        return self.gpu_us / MICRO


class Bucket(msgspec.Struct, kw_only=True):
    """Totals of the latest period seen (``YYYY-MM-DD`` or ``YYYY-MM``, in the budget timezone)."""

    period: str = ""
    counters: Counters = msgspec.field(default_factory=Counters)


class Mark(msgspec.Struct, kw_only=True):
    period: str
    level: BudgetLevel


class JournalEntry(msgspec.Struct, kw_only=True):
    batch: int
    seqs: list[int]


class Crossing(msgspec.Struct, kw_only=True):
    """A budget threshold crossed: published once as ``FinopsAlert`` plus an ``AuditEvent``."""

    crossing_id: Ident  # stable id: Nats-Msg-Id and audit event id
    budget_id: Ident
    scope: BudgetScope
    scope_id: Ident
    period: str
    level: BudgetLevel
    threshold_pct: float
    consumed: float
    limit: float
    currency: Ident
    action: BudgetAction
    # The envelope of the usage event that crossed (or of the budget change that did).
    request_id: Ident
    correlation_id: Ident
    tenant: Ident
    business_unit: Ident
    user_role: Ident
    usecase_class: UsecaseClass
    occurred_at: Timestamp


class Totals(msgspec.Struct, kw_only=True):
    """KV ``budgets`` ``totals.<scope>.<id>``: FinOps' own bookkeeping for one scope."""

    scope: str = ""
    scope_id: str = ""
    currency: str = "EUR"
    # all time
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_us: int = 0
    cost_nanos: int = 0
    gpu_seconds: float = 0.0  # derived from gpu_us, for readers
    cost: float = 0.0  # derived from cost_nanos, for readers
    day: Bucket = msgspec.field(default_factory=Bucket)
    month: Bucket = msgspec.field(default_factory=Bucket)
    # exactly-once bookkeeping
    recent_call_ids: list[str] = msgspec.field(default_factory=list)
    floor: int = 0
    journal: dict[str, JournalEntry] = msgspec.field(default_factory=dict)
    # budgets
    marks: dict[str, Mark] = msgspec.field(default_factory=dict)
    outbox: list[Crossing] = msgspec.field(default_factory=list)

    def bucket(self, period: BudgetPeriod) -> Bucket:
        return self.day if period == "day" else self.month

    def comparable(self) -> dict[str, object]:
        """Everything a rebuild must reproduce (not the dedup bookkeeping or the outbox)."""
        data: dict[str, object] = msgspec.to_builtins(self)
        for transient in ("recent_call_ids", "floor", "journal", "outbox"):
            data.pop(transient)
        return data


class BudgetDef(msgspec.Struct, kw_only=True):
    """KV ``budgets`` ``budget.<id>``: one budget (seeded from config, or set at run time)."""

    budget_id: Ident
    scope: BudgetScope
    scope_id: Ident
    period: BudgetPeriod
    limit: float
    warn_pct: float = 80.0
    act_pct: float = 100.0
    action: BudgetAction = "downgrade"
    currency: Ident = "EUR"
    source: Source = "config"
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)

    @property
    def scope_key(self) -> str:
        return scope_key(self.scope, self.scope_id)

    def same_terms(self, other: BudgetDef) -> bool:
        return all(getattr(self, f) == getattr(other, f) for f in _TERMS)


_TERMS: Final = ("budget_id", "scope", "scope_id", "period", "limit", "warn_pct", "act_pct", "action", "currency")


class BudgetReset(msgspec.Struct, kw_only=True):
    """KV ``budgets`` ``reset.<id>``: consumption before ``baseline_nanos`` in ``period`` is forgiven."""

    budget_id: Ident
    period: str
    baseline_nanos: int
    at: Timestamp = msgspec.field(default_factory=utcnow)


class StateDoc(BudgetState, kw_only=True):
    """``BudgetState`` as written: plus the totals revision it was derived from, so a slower
    worker never overwrites a newer state with an older one (readers ignore the extra field)."""

    source_revision: int = 0


Budget = tuple[BudgetDef, BudgetReset | None]


# --- keys ------------------------------------------------------------------------------------


def scope_key(scope: BudgetScope, scope_id: str) -> str:
    return f"{scope}.{subjects.token(scope_id)}"


def scope_keys(usage: UsageRecorded) -> list[str]:
    """The scopes one call counts against (KV keys allow [-_=/.A-Za-z0-9])."""
    keys = [
        scope_key("tenant", usage.tenant),
        scope_key("business_unit", usage.business_unit),
        scope_key("usecase", usage.usecase_class),
        scope_key("endpoint", usage.route),
    ]
    if usage.deployment != usage.route:
        keys.append(scope_key("endpoint", usage.deployment))
    if usage.end_user is not None:  # issue 14: budgets per end user (the pseudonym, never the id)
        keys.append(scope_key("end_user", usage.end_user))
    return keys


def totals_key(key: str) -> str:
    return f"totals.{key}"


def state_key(key: str) -> str:
    return f"state.{key}"


def split_key(key: str) -> tuple[BudgetScope, str]:
    scope, _, scope_id = key.partition(".")
    for known in SCOPES:
        if known == scope:
            return known, scope_id
    raise ValueError(f"not a scope key: {key}")


# --- periods ---------------------------------------------------------------------------------


def period_key(moment: datetime, period: BudgetPeriod, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return f"{local:%Y-%m-%d}" if period == "day" else f"{local:%Y-%m}"


def period_start(key: str, tz: tzinfo) -> datetime:
    parts = [int(p) for p in key.split("-")]
    year, month = parts[0], parts[1]
    day = parts[2] if len(parts) > 2 else 1
    return datetime(year, month, day, tzinfo=tz)


# --- applying usage --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Priced:
    """One usage event as delivered: its USAGE stream sequence and its charge."""

    seq: int
    usage: UsageRecorded
    charge: Charge


def new_totals(key: str, currency: str) -> Totals:
    scope, scope_id = split_key(key)
    return Totals(scope=scope, scope_id=scope_id, currency=currency)


def add_call(totals: Totals, usage: UsageRecorded, charge: Charge, tz: tzinfo) -> None:
    """Add one call to all-time and period totals (no dedup: callers decide that)."""
    totals.requests += 1
    totals.prompt_tokens += usage.usage.prompt_tokens
    totals.completion_tokens += usage.usage.completion_tokens
    totals.gpu_us += charge.gpu_us
    totals.cost_nanos += charge.cost_nanos
    totals.gpu_seconds = totals.gpu_us / MICRO
    totals.cost = totals.cost_nanos / NANO
    for period in ("day", "month"):
        bucket = totals.bucket(period)
        key = period_key(usage.occurred_at, period, tz)
        if key > bucket.period:  # a newer period starts; an older one is only in all-time totals
            bucket.period, bucket.counters = key, Counters()
        if key == bucket.period:
            bucket.counters.add(usage, charge)


def remember_call(totals: Totals, call_id: str) -> None:
    totals.recent_call_ids.append(call_id)
    if len(totals.recent_call_ids) > RECENT_IDS:
        del totals.recent_call_ids[: len(totals.recent_call_ids) - RECENT_IDS]


def apply_usage(totals: Totals, usage: UsageRecorded, charge: Charge | None = None, tz: tzinfo | None = None) -> bool:
    """Add one call unless its call id is among the recent ones; True if it counted."""
    if usage.call_id in totals.recent_call_ids:
        return False
    charge = charge or Charge(round(usage.cost * NANO), round(usage.gpu_seconds * MICRO), "event")
    add_call(totals, usage, charge, tz or UTC)
    remember_call(totals, usage.call_id)
    return True


def apply_batch(
    totals: Totals,
    items: Sequence[Priced],
    *,
    incarnation: str,
    batch: int,
    ack_floor: int,
    budgets: Sequence[Budget],
    now: datetime,
    tz: tzinfo,
    new_id: IdFactory,
) -> list[Priced]:
    """Apply a batch's events for this scope exactly once; return those that counted.

    Budget levels are evaluated after each counted call, so the crossing names the very
    request that crossed; crossings go to ``totals.outbox``.
    """
    totals.floor = max(totals.floor, ack_floor)
    applied = {seq for entry in totals.journal.values() for seq in entry.seqs}
    recent = set(totals.recent_call_ids)
    taken: list[int] = []
    counted: list[Priced] = []
    for item in items:
        if item.seq <= totals.floor or item.seq in applied:
            continue  # a redelivery of a message already reflected here
        applied.add(item.seq)
        taken.append(item.seq)
        if item.usage.call_id in recent:
            continue  # the same call published twice
        recent.add(item.usage.call_id)
        add_call(totals, item.usage, item.charge, tz)
        remember_call(totals, item.usage.call_id)
        counted.append(item)
        if budgets:
            evaluate(totals, budgets, now, tz, trigger=item.usage, new_id=new_id)
    _journal(totals, incarnation, batch, taken)
    return counted


def _journal(totals: Totals, incarnation: str, batch: int, taken: list[int]) -> None:
    entry = totals.journal.get(incarnation)
    if entry is not None and entry.batch == batch:  # a retry of the same batch
        entry.seqs = sorted(set(entry.seqs) | set(taken))
    elif taken:
        totals.journal[incarnation] = JournalEntry(batch=batch, seqs=taken)
    else:
        totals.journal.pop(incarnation, None)  # its previous batch was acked: cannot come back
    for name in list(totals.journal):
        kept = [s for s in totals.journal[name].seqs if s > totals.floor]
        if kept:
            totals.journal[name].seqs = kept
        else:
            del totals.journal[name]


# --- budgets ---------------------------------------------------------------------------------


class IdFactory:
    """Fresh crossing ids: random, or ``<prefix><n>`` for deterministic tests."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._n = 0

    def __call__(self) -> str:
        if self._prefix:
            self._n += 1
            return f"{self._prefix}{self._n}"
        return uuid.uuid4().hex



def consumed_nanos(totals: Totals, budget: Budget, now: datetime, tz: tzinfo) -> tuple[str, int]:
    """The budget's current period and what was spent in it (after a reset, since the reset)."""
    definition, reset = budget
    period = period_key(now, definition.period, tz)
    bucket = totals.bucket(definition.period)
    used = bucket.counters.cost_nanos if bucket.period == period else 0
    if reset is not None and reset.period == period:
        used = max(0, used - reset.baseline_nanos)
    return period, used


def level_of(consumed: int, definition: BudgetDef) -> BudgetLevel:
    limit = definition.limit * NANO
    if consumed * 100 >= definition.act_pct * limit:
        return "exhausted"
    if consumed * 100 >= definition.warn_pct * limit:
        return "warn"
    return "ok"


def evaluate(
    totals: Totals,
    budgets: Sequence[Budget],
    now: datetime,
    tz: tzinfo,
    *,
    trigger: UsageRecorded | None = None,
    new_id: IdFactory | None = None,
) -> list[Crossing]:
    """Update the marks of this scope's budgets; record (and return) every upward crossing.

    ``new_id=None`` updates the marks silently (a rebuild: those crossings were published
    when they happened).
    """
    crossings: list[Crossing] = []
    for budget in budgets:
        definition = budget[0]
        period, used = consumed_nanos(totals, budget, now, tz)
        level = level_of(used, definition)
        mark = totals.marks.get(definition.budget_id)
        before = mark.level if mark is not None and mark.period == period else "ok"
        if new_id is not None:
            for crossed in LEVELS[LEVELS.index(before) + 1 : LEVELS.index(level) + 1]:
                crossings.append(_crossing(definition, period, crossed, used, trigger, new_id(), now))
        totals.marks[definition.budget_id] = Mark(period=period, level=level)
    wanted = {b[0].budget_id for b in budgets}
    for stale in [k for k in totals.marks if k not in wanted]:
        del totals.marks[stale]
    totals.outbox.extend(crossings)
    return crossings


def _crossing(
    definition: BudgetDef,
    period: str,
    level: BudgetLevel,
    used: int,
    trigger: UsageRecorded | None,
    crossing_id: str,
    now: datetime,
) -> Crossing:
    if trigger is not None:
        envelope: dict[str, object] = {
            "request_id": trigger.request_id,
            "correlation_id": trigger.correlation_id,
            "tenant": trigger.tenant,
            "business_unit": trigger.business_unit,
            "user_role": trigger.user_role,
            "usecase_class": trigger.usecase_class,
            "occurred_at": trigger.occurred_at,
        }
    else:  # a budget change crossed the threshold, no request did
        envelope = synthetic_envelope(definition, f"budget-{crossing_id}", now)
    return Crossing(
        crossing_id=crossing_id,
        budget_id=definition.budget_id,
        scope=definition.scope,
        scope_id=definition.scope_id,
        period=period,
        level=level,
        threshold_pct=definition.act_pct if level == "exhausted" else definition.warn_pct,
        consumed=used / NANO,
        limit=definition.limit,
        currency=definition.currency,
        action=definition.action if level == "exhausted" else "none",
        **envelope,  # type: ignore[arg-type]
    )


def synthetic_envelope(definition: BudgetDef, request_id: str, now: datetime) -> dict[str, object]:
    """Envelope fields for events about a budget rather than a request."""
    usecases: tuple[str, ...] = get_args(UsecaseClass)
    return {
        "request_id": request_id,
        "correlation_id": request_id,
        "tenant": definition.scope_id if definition.scope == "tenant" else "platform",
        "business_unit": definition.scope_id if definition.scope == "business_unit" else "finops",
        "user_role": "finops",
        "usecase_class": definition.scope_id
        if definition.scope == "usecase" and definition.scope_id in usecases
        else "chat",
        "occurred_at": now,
    }


def budget_state(totals: Totals, budget: Budget, now: datetime, tz: tzinfo) -> BudgetState:
    definition = budget[0]
    period, used = consumed_nanos(totals, budget, now, tz)
    level = level_of(used, definition)
    return BudgetState(
        budget_id=definition.budget_id,
        scope=definition.scope,
        scope_id=definition.scope_id,
        period=definition.period,
        period_start=period_start(period, tz),
        limit=definition.limit,
        consumed=used / NANO,
        currency=definition.currency,
        level=level,
        action=definition.action if level == "exhausted" else "none",
        updated_at=now,
    )


def scope_state(
    totals: Totals, budgets: Sequence[Budget], now: datetime, tz: tzinfo, revision: int
) -> StateDoc | None:
    """What the router enforces for one scope: its most severe budget (None: no budget)."""
    states = [budget_state(totals, b, now, tz) for b in budgets]
    if not states:
        return None
    worst = max(states, key=lambda s: (LEVELS.index(s.level), s.consumed / s.limit if s.limit else 0.0))
    return StateDoc(**msgspec.structs.asdict(worst), source_revision=revision)


# --- replay (rebuild and reports) --------------------------------------------------------------


class Replay:
    """Folds the USAGE stream into totals documents, each call counted once (by call id)."""

    def __init__(self, currency: str, tz: tzinfo) -> None:
        self.currency = currency
        self.tz = tz
        self.docs: dict[str, Totals] = {}
        self.seen: set[str] = set()
        self.through = 0
        self.duplicates = 0

    def add(self, seq: int, usage: UsageRecorded, charge: Charge) -> bool:
        self.through = max(self.through, seq)
        if usage.call_id in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(usage.call_id)
        for key in scope_keys(usage):
            doc = self.docs.get(key)
            if doc is None:
                doc = self.docs[key] = new_totals(key, self.currency)
            add_call(doc, usage, charge, self.tz)
            remember_call(doc, usage.call_id)
        return True

    def finish(self, budgets_of: dict[str, list[Budget]], now: datetime) -> dict[str, Totals]:
        """Documents as a rebuild writes them: floor at the last seq read, marks at today's levels."""
        for key in budgets_of:
            if key not in self.docs:
                self.docs[key] = new_totals(key, self.currency)
        for key, doc in self.docs.items():
            doc.floor = self.through
            doc.journal = {}
            doc.outbox = []
            doc.marks = {}
            evaluate(doc, budgets_of.get(key, []), now, self.tz)
        return self.docs


def index_budgets(
    definitions: Iterable[BudgetDef], resets: dict[str, BudgetReset]
) -> dict[str, list[Budget]]:
    """Budgets by scope key, each with its reset (if any)."""
    index: dict[str, list[Budget]] = {}
    for definition in definitions:
        index.setdefault(definition.scope_key, []).append((definition, resets.get(definition.budget_id)))
    return index

