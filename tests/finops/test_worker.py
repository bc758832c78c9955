"""FinOps workers against a real nats-server: exactly once, crossings, rebuild, budgets, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from typer.testing import CliRunner

from schemas import subjects
from schemas.events import AuditEvent, FinopsAlert, decode
from schemas.streams import KV_BUDGETS
from services.finops.cli import app
from services.finops.ledger import Replay
from services.finops.pricing import PriceBook
from services.finops.rebuild import Rebuilder, differences, live_documents
from services.finops.settings import FinOpsConfig
from services.finops.store import config_budgets
from services.runtime.bus import ensure_topology
from services.runtime.settings import PlatformConfig, load_config
from stellwerk.supervisor import free_port
from tests.finops.conftest import Workers, kv_state, kv_totals, publish, read_all, settled
from tests.finops.helpers import usage
from tests.integration.mesh import eventually

NOW = datetime.now(UTC)


def mixed_events(count: int, start: int = 0) -> list:  # type: ignore[type-arg]
    tenants, units = ("zeta", "omega", "kappa"), ("claims", "underwriting", "it")
    return [
        usage(
            n, tenant=tenants[n % 3], business_unit=units[n % 3 - 1], usecase=("chat", "coding")[n % 2],
            route=("api-gpt52", "local-vllm")[n % 5 == 0], deployment=("api-gpt52-1", "local-vllm-1")[n % 5 == 0],
            gpu_seconds=0.4 if n % 5 == 0 else 0.0, prompt=100 + n % 17, completion=20 + n % 11, at=NOW,
        )
        for n in range(start, start + count)
    ]


def cli(workers: Workers, *args: str) -> str:
    env = {"STELLWERK_NATS_URL": workers.url, "STELLWERK_CONFIG_FILE": str(workers.config)}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def price_book(config: PlatformConfig, config_file: Path) -> PriceBook:
    return PriceBook(FinOpsConfig.load(config_file), config.deployments, config.currency)


def rebuilder(js: JetStreamContext, config: PlatformConfig, config_file: Path) -> Rebuilder:
    """What ``stellwerk finops rebuild`` replays with, for the workers' config file."""
    seeds = config_budgets(FinOpsConfig.load(config_file).budgets, config.currency)
    return Rebuilder(js, price_book(config, config_file), seeds, ZoneInfo(config.finops_timezone))


async def test_every_event_is_booked_once_with_two_workers_duplicates_and_a_killed_worker(
    workers: Workers, nc: Client
) -> None:
    js = nc.jetstream()
    workers.start("finops-1")
    victim = workers.start("finops-2")
    await workers.ready(nc, 2)
    events = mixed_events(3000)
    # Every 10th call is published again (without a msg id) 50 calls later: a producer retrying
    # after JetStream's duplicate window. The ledger recognises it among a scope's last
    # RECENT_IDS calls (docs/finops.md: what lies beyond is the rebuild's to correct).
    for i in range(0, 3000, 100):
        await publish(js, events[i : i + 100])
        await publish(js, events[i : i + 100 : 10], msg_ids=False)

    async def some_booked() -> bool:
        info = await js.consumer_info("USAGE", "finops")
        return (info.ack_floor.stream_seq or 0) > 300

    await eventually(some_booked)
    os.kill(victim.pid, signal.SIGKILL)  # mid-stream: its unacked batch comes back after ack_wait
    victim.wait()
    workers.processes.pop("finops-2")
    workers.start("finops-3")
    await settled(js)
    info = await js.consumer_info("USAGE", "finops")
    # Deliveries (consumer seq) exceed messages (stream seq): the killed worker's batch came back.
    assert info.delivered.consumer_seq > info.delivered.stream_seq

    config = load_config(workers.config)
    prices, expected = price_book(config, workers.config), Replay(config.currency, ZoneInfo("UTC"))
    for event in events:
        expected.add(0, event, prices.charge(event))
    for key in ("tenant.zeta", "business_unit.it", "usecase.coding", "endpoint.local-vllm", "endpoint.api-gpt52-1"):
        assert (await kv_totals(js, key)).comparable() == expected.docs[key].comparable(), key
    assert (await kv_totals(js, "tenant.zeta")).requests == 1000
    rebuilt = await rebuilder(js, config, workers.config).compute()
    assert rebuilt.events == 3300 and rebuilt.duplicates == 300
    assert differences(rebuilt, *await live_documents(js, config.currency)) == []


async def test_each_threshold_crossing_is_alerted_and_audited_exactly_once(workers: Workers, nc: Client) -> None:
    js = nc.jetstream()
    workers.start("finops-1")
    workers.start("finops-2")
    await workers.ready(nc, 2)
    # 0.01125 EUR per call against 0.05: warn (80 %) with the 4th call, exhausted with the 5th.
    calls = [usage(n, tenant="acme", at=NOW) for n in range(12)]
    await asyncio.gather(*(publish(js, [c]) for c in calls))
    await publish(js, calls[:6], msg_ids=False)
    await settled(js)

    async def exhausted() -> bool:
        state = await kv_state(js, "tenant.acme")
        return state is not None and state.level == "exhausted"

    await eventually(exhausted)
    state = await kv_state(js, "tenant.acme")
    assert state is not None
    assert (state.budget_id, state.action, state.limit) == ("acme-tight", "downgrade", 0.05)
    assert state.consumed == pytest.approx(12 * 0.01125)

    async def both_published() -> list[FinopsAlert] | None:
        alerts = await read_all(js, subjects.FINOPS_ALERT, lambda d: decode(d, FinopsAlert))
        return alerts if len(alerts) >= 2 else None

    alerts = await eventually(both_published)
    await asyncio.sleep(1.0)  # would a second copy still arrive?
    alerts = await read_all(js, subjects.FINOPS_ALERT, lambda d: decode(d, FinopsAlert))
    assert sorted((a.threshold_pct, a.action) for a in alerts) == [(80.0, "warn"), (100.0, "downgrade")]
    assert all(a.tenant == "acme" and a.request_id.startswith("req") for a in alerts)
    audits = await read_all(js, subjects.audit("finops"), lambda d: decode(d, AuditEvent))
    assert sorted(a.outcome for a in audits) == ["budget_exhausted", "budget_warn"]
    assert all(a.rule_id == "budget.acme-tight" for a in audits)


async def test_kv_rebuilt_from_the_stream_after_its_loss_equals_the_live_state(
    workers: Workers, nc: Client
) -> None:
    js = nc.jetstream()
    config = load_config(workers.config)
    workers.start("finops-1")
    workers.start("finops-2")
    await workers.ready(nc, 2)
    await publish(js, mixed_events(800) + [usage(f"a{n}", tenant="acme", at=NOW) for n in range(6)])
    await asyncio.to_thread(cli, workers, "budget", "set", "zeta-daily", "--scope", "tenant", "--scope-id", "zeta",
                            "--limit", "0.5", "--period", "day", "--action", "block_noncritical",
                            "--actor", "alice")
    await settled(js)

    async def zeta_evaluated() -> bool:
        state = await kv_state(js, "tenant.zeta")
        return state is not None and state.budget_id == "zeta-daily"

    await eventually(zeta_evaluated)
    await asyncio.to_thread(cli, workers, "budget", "reset", "acme-tight", "--actor", "bob")

    async def acme_reset() -> bool:
        state = await kv_state(js, "tenant.acme")
        return state is not None and state.level == "ok"

    await eventually(acme_reset)
    live = await live_documents(js, config.currency)
    assert differences(await rebuilder(js, config, workers.config).compute(), *live) == []

    workers.stop_all()
    await js.delete_key_value(KV_BUDGETS)  # the loss
    await ensure_topology(js)
    output = await asyncio.to_thread(cli, workers, "rebuild")
    assert "replayed 806 usage events" in output
    rebuilt_totals, rebuilt_states = await live_documents(js, config.currency)
    assert {k: t.comparable() for k, t in rebuilt_totals.items()} == {
        k: t.comparable() for k, t in live[0].items()
    }
    assert {k: (s.budget_id, s.level, s.action, s.consumed) for k, s in rebuilt_states.items()} == {
        k: (s.budget_id, s.level, s.action, s.consumed) for k, s in live[1].items()
    }
    listed = json.loads(await asyncio.to_thread(cli, workers, "budget", "list", "--format", "json"))
    by_id = {row["definition"]["budget_id"]: row for row in listed}
    assert by_id["zeta-daily"]["definition"]["source"] == "cli", "restored from the audit trail"

    # Back in service: new events count on top, the replayed ones never again.
    workers.start("finops-3")
    await workers.ready(nc, 1)
    await publish(js, mixed_events(30, start=800))
    await settled(js)
    assert (await kv_totals(js, "tenant.zeta")).requests == 267 + 10


async def test_a_budget_set_at_run_time_acts_at_once_and_a_reset_lifts_it(workers: Workers, nc: Client) -> None:
    js = nc.jetstream()
    workers.start("finops-1")
    await workers.ready(nc, 1)
    await publish(js, [usage(n, tenant="zeta", at=NOW) for n in range(3)])
    await settled(js)
    await asyncio.to_thread(cli, workers, "budget", "set", "zeta-cap", "--scope", "tenant", "--scope-id",
                            "zeta", "--limit", "0.02", "--action", "force_local")

    async def state_is(level: str) -> bool:
        state = await kv_state(js, "tenant.zeta")
        return state is not None and state.level == level

    await eventually(lambda: state_is("exhausted"))
    state = await kv_state(js, "tenant.zeta")
    assert state is not None and state.action == "force_local"
    alerts = await read_all(js, subjects.FINOPS_ALERT, lambda d: decode(d, FinopsAlert))
    assert [(a.budget_id, a.threshold_pct) for a in alerts] == [("zeta-cap", 80.0), ("zeta-cap", 100.0)]
    assert alerts[0].request_id.startswith("budget-"), "a budget change crossed, no request did"
    await asyncio.to_thread(cli, workers, "budget", "reset", "zeta-cap")
    await eventually(lambda: state_is("ok"))
    await asyncio.to_thread(cli, workers, "budget", "delete", "zeta-cap")

    async def state_gone() -> bool:
        return await kv_state(js, "tenant.zeta") is None

    await eventually(state_gone)
    audits = await read_all(js, subjects.audit("finops"), lambda d: decode(d, AuditEvent))
    changes = [a for a in audits if a.outcome in ("budget_set", "budget_reset", "budget_deleted")]
    assert [a.outcome for a in changes] == ["budget_set", "budget_reset", "budget_deleted"]
    assert changes[0].attributes["limit"] == "0.02" and changes[0].tenant == "zeta"
    assert all(a.attributes["actor"] for a in changes)


async def test_cost_and_tokens_are_exported_to_prometheus(workers: Workers, nc: Client) -> None:
    js = nc.jetstream()
    port = free_port()
    workers.start("finops-1", STELLWERK_FINOPS_METRICS_PORT=str(port))
    await workers.ready(nc, 1)
    await publish(js, [usage(n, tenant="zeta", usecase="coding", at=NOW) for n in range(4)])
    await settled(js)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("stellwerk_finops_cost_total{"))
    assert 'tenant="zeta"' in line and 'usecase="coding"' in line and 'model="m"' in line
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(4 * 0.01125)
    tokens = [x for x in text.splitlines() if x.startswith("stellwerk_finops_tokens_total{")]
    assert sum(float(x.rsplit(" ", 1)[1]) for x in tokens) == 4 * 2000
    assert 'stellwerk_finops_budget_level{budget_id="claims-day"} 0.0' in text


async def test_overspend_is_bounded_by_the_calls_in_flight_at_the_breach(workers: Workers, nc: Client) -> None:
    """Eight concurrent "routers" read the budget state before each call, as the router does,
    and stop once it acts. Every admitted call is booked exactly once; what was booked after
    the breach is exactly what was in flight — admitted, not yet booked — when it was recorded."""
    js = nc.jetstream()
    workers.start("finops-1")
    workers.start("finops-2")
    await workers.ready(nc, 2)
    admitted: list[int] = []
    stop = asyncio.Event()

    async def router(i: int) -> None:
        n = 0
        while not stop.is_set():
            state = await kv_state(js, "tenant.acme")
            if state is not None and state.action != "none":
                stop.set()
                return
            n += 1
            admitted.append(n)
            await publish(js, [usage(f"r{i}-{n}", tenant="acme", at=NOW)])

    await asyncio.wait_for(asyncio.gather(*(router(i) for i in range(8))), timeout=60)
    await settled(js)
    final = await kv_totals(js, "tenant.acme")
    assert final.month.counters.requests == len(admitted)
    [breach] = [a for a in await read_all(js, subjects.FINOPS_ALERT, lambda d: decode(d, FinopsAlert))
                if a.threshold_pct == 100.0]
    per_call = 0.01125
    booked_at_breach = round(breach.consumed / per_call)
    assert breach.consumed >= 0.05 > breach.consumed - per_call, "recorded by the call that crossed"
    in_flight_at_breach = len(admitted) - booked_at_breach
    overspend = final.cost - 0.05
    assert overspend <= (in_flight_at_breach + 1) * per_call
    assert 0 <= in_flight_at_breach < len(admitted)
