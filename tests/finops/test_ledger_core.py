"""The ledger's functional core: exactly-once application, periods, budgets, crossings, state."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec

from services.finops.ledger import (
    RECENT_IDS,
    Budget,
    BudgetReset,
    IdFactory,
    Priced,
    Replay,
    Totals,
    apply_batch,
    evaluate,
    new_totals,
    period_key,
    scope_state,
)
from services.finops.pricing import Charge
from tests.finops.helpers import NOON, budget, usage

TZ = ZoneInfo("Europe/Berlin")
CENT = 10_000_000  # nano-units


def priced(seq: int, n: int | None = None, cost_nanos: int = CENT, **kwargs: object) -> Priced:
    return Priced(seq, usage(seq if n is None else n, **kwargs), Charge(cost_nanos, 0, "price_table"))  # type: ignore[arg-type]


def apply(
    totals: Totals, items: list[Priced], *, incarnation: str = "w1", batch: int = 1, floor: int = 0,
    budgets: list[Budget] | None = None, now: datetime = NOON, ids: IdFactory | None = None,
) -> list[Priced]:
    return apply_batch(totals, items, incarnation=incarnation, batch=batch, ack_floor=floor,
                       budgets=budgets or [], now=now, tz=TZ, new_id=ids or IdFactory("x"))


def test_a_redelivered_batch_is_not_counted_again_by_any_worker() -> None:
    totals = new_totals("tenant.acme", "EUR")
    batch = [priced(s) for s in range(1, 11)]
    assert len(apply(totals, batch, incarnation="w1", batch=7)) == 10
    # w1 crashed before its acks arrived: the same messages come back to w2, and to w1 itself
    # retrying the batch it was working on.
    assert apply(totals, batch[3:], incarnation="w2", batch=1) == []
    assert apply(totals, batch, incarnation="w1", batch=7) == []
    assert totals.requests == 10 and totals.cost_nanos == 10 * CENT


def test_the_journal_keeps_only_each_workers_latest_batch_above_the_floor() -> None:
    totals = new_totals("tenant.acme", "EUR")
    seq = 0
    for batch in range(1, 200):
        items = [priced(seq := seq + 1) for _ in range(50)]
        apply(totals, items, incarnation=f"w{batch % 2}", batch=batch, floor=max(0, seq - 120))
    assert totals.requests == 199 * 50
    assert set(totals.journal) == {"w0", "w1"}
    assert sum(len(e.seqs) for e in totals.journal.values()) <= 100
    assert all(s > totals.floor for e in totals.journal.values() for s in e.seqs)
    # Everything at or below the floor is known to be acked: a late copy is ignored.
    assert apply(totals, [priced(5)], incarnation="w9", batch=1) == []


def test_a_call_published_twice_counts_once() -> None:
    totals = new_totals("tenant.acme", "EUR")
    assert len(apply(totals, [priced(1, n=1), priced(2, n=1), priced(3, n=2)])) == 2
    assert totals.requests == 2 and len(totals.recent_call_ids) == 2


def test_totals_do_not_depend_on_arrival_order_batching_or_crashes() -> None:
    """Workers take random batches; some crash after writing part of a batch (so it comes back
    to another worker), producers publish some calls twice: always the same result as a replay."""
    tenants = ("acme", "zeta")

    def event(seq: int) -> Priced:
        n = seq - 1 if seq % 7 == 0 else seq  # every 7th message repeats the call before it
        return priced(seq, n=n, cost_nanos=1_000_000 * (n % 13 + 1), tenant=tenants[n % 2],
                      at=NOON - timedelta(hours=(n * 7) % 72))

    events = [event(seq) for seq in range(1, 400)]
    replay = Replay("EUR", TZ)
    for item in events:
        replay.add(item.seq, item.usage, item.charge)
    expected = {k: d.comparable() for k, d in replay.docs.items() if k.startswith("tenant.")}
    for seed in range(8):
        rng = random.Random(seed)
        docs = {f"tenant.{t}": new_totals(f"tenant.{t}", "EUR") for t in tenants}
        queue = events[:]
        rng.shuffle(queue)
        acked: set[int] = set()
        batch_no = 0
        while queue:
            size = rng.randint(1, 60)
            chunk, queue = queue[:size], queue[size:]
            batch_no += 1
            incarnation = f"w{batch_no}"  # each batch by a (possibly new) worker incarnation
            floor = next((s - 1 for s in range(1, 401) if s not in acked), 400)
            crash = rng.random() < 0.3
            for tenant in rng.sample(tenants, len(tenants)):
                if crash and rng.random() < 0.5:
                    continue  # crashed before writing this document
                mine = [i for i in chunk if i.usage.tenant == tenant]
                apply(docs[f"tenant.{tenant}"], mine, incarnation=incarnation, batch=batch_no, floor=floor)
            if crash:  # not acked: the server redelivers the batch later, to someone
                queue[rng.randint(0, len(queue)):0] = chunk
            else:
                acked.update(i.seq for i in chunk)
        assert {k: d.comparable() for k, d in docs.items()} == expected


def test_day_and_month_buckets_follow_the_budget_timezone() -> None:
    totals = new_totals("tenant.acme", "EUR")
    late_evening_utc = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 1 December 00:30 in Berlin
    apply(totals, [priced(1, at=datetime(2026, 11, 30, 12, tzinfo=UTC)), priced(2, at=late_evening_utc)])
    assert (totals.day.period, totals.month.period) == ("2026-12-01", "2026-12")
    assert totals.day.counters.requests == 1 and totals.month.counters.requests == 1
    assert totals.requests == 2
    # A late event of an older period only reaches the all-time totals.
    apply(totals, [priced(3, at=datetime(2026, 11, 29, tzinfo=UTC))], batch=2)
    assert totals.month.counters.requests == 1 and totals.requests == 3


def test_each_threshold_crossing_is_recorded_once_and_names_the_request() -> None:
    b: Budget = (budget(limit=0.1), None)  # 10 cents: warn at 8, act at 10
    totals = new_totals("tenant.acme", "EUR")
    counted = apply(totals, [priced(s) for s in range(1, 8)], budgets=[b])
    assert len(counted) == 7 and totals.outbox == []
    apply(totals, [priced(8)], batch=2, budgets=[b])
    [warn] = totals.outbox
    assert (warn.level, warn.request_id, warn.threshold_pct, warn.action) == ("warn", "req8", 80.0, "none")
    apply(totals, [priced(9), priced(10), priced(11)], batch=3, budgets=[b])
    [_, exhausted] = totals.outbox
    assert (exhausted.level, exhausted.request_id, exhausted.action) == ("exhausted", "req10", "downgrade")
    assert exhausted.consumed == 0.1
    apply(totals, [priced(12)], batch=4, budgets=[b])
    apply(totals, [priced(10)], batch=5, budgets=[b], incarnation="w2")  # a redelivery
    assert len(totals.outbox) == 2, "no crossing twice"


def test_one_call_can_cross_both_thresholds() -> None:
    totals = new_totals("tenant.acme", "EUR")
    apply(totals, [priced(1, cost_nanos=50 * CENT)], budgets=[(budget(limit=0.1), None)])
    assert [c.level for c in totals.outbox] == ["warn", "exhausted"]
    assert {c.request_id for c in totals.outbox} == {"req1"}


def test_reset_raise_and_new_period_rearm_the_thresholds() -> None:
    definition = budget(limit=0.1, period="day")
    totals = new_totals("tenant.acme", "EUR")
    apply(totals, [priced(s) for s in range(1, 11)], budgets=[(definition, None)])
    assert totals.marks["b1"].level == "exhausted"
    reset = BudgetReset(budget_id="b1", period=period_key(NOON, "day", TZ), baseline_nanos=10 * CENT)
    evaluate(totals, [(definition, reset)], NOON, TZ, new_id=IdFactory("r"))
    assert totals.marks["b1"].level == "ok"
    apply(totals, [priced(s) for s in range(11, 21)], batch=2, budgets=[(definition, reset)])
    assert [c.level for c in totals.outbox[2:]] == ["warn", "exhausted"], "the reset period crosses again"
    raised = msgspec.structs.replace(definition, limit=1.0)
    evaluate(totals, [(raised, None)], NOON, TZ, new_id=IdFactory("l"))
    assert totals.marks["b1"].level == "ok"  # 20 cents of 1 EUR
    tomorrow = NOON + timedelta(days=1)
    apply(totals, [priced(s, at=tomorrow) for s in range(21, 29)], batch=3, budgets=[(definition, None)],
          now=tomorrow)
    assert totals.outbox[-1].level == "warn" and totals.outbox[-1].period == period_key(tomorrow, "day", TZ)


def test_silent_evaluation_records_levels_without_crossings() -> None:
    totals = new_totals("tenant.acme", "EUR")
    apply(totals, [priced(s) for s in range(1, 13)])
    assert evaluate(totals, [(budget(limit=0.1), None)], NOON, TZ) == []
    assert totals.marks["b1"].level == "exhausted" and totals.outbox == []


def test_the_router_sees_the_most_severe_budget_and_its_action_only_when_exhausted() -> None:
    totals = new_totals("tenant.acme", "EUR")
    apply(totals, [priced(s) for s in range(1, 10)])  # 9 cents this month
    month = (budget("monthly", limit=1.0, action="block_noncritical"), None)
    tight = (budget("tight", limit=0.1, action="force_local"), None)
    state = scope_state(totals, [month, tight], NOON, TZ, revision=42)
    assert state is not None
    assert (state.budget_id, state.level, state.action, state.source_revision) == ("tight", "warn", "none", 42)
    assert state.period_start == datetime(2026, 11, 1, tzinfo=TZ)
    apply(totals, [priced(10)], batch=2)
    state = scope_state(totals, [month, tight], NOON, TZ, revision=43)
    assert state is not None and (state.level, state.action) == ("exhausted", "force_local")
    assert scope_state(totals, [], NOON, TZ, revision=44) is None


def test_recent_call_ids_are_bounded() -> None:
    totals = new_totals("tenant.acme", "EUR")
    apply(totals, [priced(s) for s in range(1, RECENT_IDS + 50)])
    assert len(totals.recent_call_ids) == RECENT_IDS
