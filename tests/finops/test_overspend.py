"""The overspend bound of asynchronous enforcement, on the real ledger core.

Enforcement is asynchronous: the router decides on the last budget state FinOps wrote. A call
can therefore still be charged after the breach only if it was admitted before the router saw
the breach. With the router reading the state the moment it decides (lag 0), that is exactly
the requests in flight — admitted, not yet booked — when the breach is recorded; with a lag,
add those admitted during the lag. Random interleavings of admissions, completions and FinOps
batches check the bound, and that the breach is recorded by the very call that crosses.
"""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest

from services.finops.ledger import Budget, IdFactory, Priced, apply_batch, new_totals, scope_state
from services.finops.pricing import NANO, Charge
from tests.finops.helpers import NOON, budget, usage

TZ = ZoneInfo("UTC")


def simulate(seed: int, lag: int) -> dict[str, int]:
    rng = random.Random(seed)
    limit_nanos = 1_000_000  # 0.001
    b: Budget = (budget(limit=limit_nanos / NANO), None)
    totals = new_totals("tenant.acme", "EUR")
    in_flight: list[Priced] = []  # admitted, call running
    completed: list[Priced] = []  # usage event published, not yet booked by FinOps
    states: list[str] = ["none"]  # the state FinOps wrote after each of its steps
    seq = admitted = 0
    breach: dict[str, int] = {}
    admitted_after_breach = 0
    for _step in range(3000):
        seen = states[max(0, len(states) - 1 - lag)]  # the router's view, `lag` FinOps steps old
        move = rng.random()
        if move < 0.4 and seen == "none":
            seq += 1
            admitted += 1
            if breach:
                admitted_after_breach += 1
            cost = rng.randint(1, 60_000)
            in_flight.append(Priced(seq, usage(seq), Charge(cost, 0, "price_table")))
        elif move < 0.7 and in_flight:
            completed.append(in_flight.pop(rng.randrange(len(in_flight))))
        elif completed:
            take = rng.randint(1, len(completed))
            batch, completed[:] = completed[:take], completed[take:]
            before = len(totals.outbox)
            apply_batch(totals, batch, incarnation="w", batch=seq, ack_floor=0, budgets=[b], now=NOON, tz=TZ,
                        new_id=IdFactory("c"))
            state = scope_state(totals, [b], NOON, TZ, revision=seq)
            assert state is not None
            states.append(state.action)
            crossed = [c for c in totals.outbox[before:] if c.level == "exhausted"]
            if crossed and not breach:
                # The crossing is recorded by the call that crossed: before it, under the limit.
                crossing_call = next(i for i in batch if i.usage.request_id == crossed[0].request_id)
                assert totals.month.counters.cost_nanos >= limit_nanos
                breach = {
                    "booked": round(crossed[0].consumed * NANO),
                    "crossing_cost": crossing_call.charge.cost_nanos,
                    # admitted, not booked when the crossing was: running, queued, later in the batch
                    "in_flight_cost": sum(i.charge.cost_nanos for i in [*in_flight, *completed])
                    + sum(i.charge.cost_nanos for i in batch[batch.index(crossing_call) + 1 :]),
                }
    # drain: every admitted call is booked eventually
    pending = in_flight + completed
    apply_batch(totals, pending, incarnation="w", batch=seq + 1, ack_floor=0, budgets=[b], now=NOON, tz=TZ,
                new_id=IdFactory("d"))
    assert totals.month.counters.requests == admitted, "every admitted call is booked exactly once"
    if not breach:
        return {}
    booked_after = totals.month.counters.cost_nanos - breach["booked"]
    assert breach["booked"] - breach["crossing_cost"] < limit_nanos <= breach["booked"]
    return {**breach, "booked_after": booked_after, "admitted_after": admitted_after_breach,
            "limit": limit_nanos, "final": totals.month.counters.cost_nanos}


@pytest.mark.parametrize("seed", range(30))
def test_overspend_is_at_most_the_calls_in_flight_when_the_breach_is_recorded(seed: int) -> None:
    result = simulate(seed, lag=0)
    assert result, "the scenario spends past the limit"
    assert result["admitted_after"] == 0, "no admission once the router reads the breach"
    assert result["booked_after"] <= result["in_flight_cost"]
    assert result["final"] - result["limit"] < result["crossing_cost"] + result["in_flight_cost"]


@pytest.mark.parametrize("seed", range(10))
def test_with_an_observation_lag_the_bound_adds_the_admissions_during_the_lag(seed: int) -> None:
    result = simulate(seed, lag=3)
    assert result
    lag_cost_bound = result["admitted_after"] * 60_000
    assert result["booked_after"] <= result["in_flight_cost"] + lag_cost_bound
