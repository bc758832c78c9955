"""FinOps: usage events priced per second per worker, and enforcement lag to the router.

    uv run python bench/finops.py [--events 50000] [--trials 60] [--probe-ms 2]

Starts its own nats-server (free port, temporary directory), measures, prints a table:

1. *Core*: pricing + the exactly-once ledger, in process, no I/O (events/s).
2. *Worker*: N usage events (5 tenants × 4 business units × 5 use cases × 2 routes) wait in
   USAGE; one FinOps worker process (then two) books them all — events/s from its first
   delivery to the last ack.
3. *Enforcement lag*: a real router worker receives a screened request for a tenant every
   ``--probe-ms``; a budget of that tenant (action ``force_local``) is spent by one usage event.
   Lag = from publishing that usage event to the first router decision that applies it
   (``budget.exhausted`` instead of ``quality.high``), read from the router's audit events.
   Also shown: usage event → ``state.*`` written to KV (what the router watches).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import yaml
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from rich.console import Console
from rich.table import Table

from schemas import subjects
from schemas.events import (
    AuditEvent,
    ChatMessage,
    DlpDecision,
    RequestAttributes,
    RequestScreened,
    TokenUsage,
    UsageRecorded,
    deadline_in,
    decode,
    encode,
)
from schemas.streams import FINOPS_USAGE, KV_BUDGETS
from services.finops.ledger import (
    BudgetDef,
    IdFactory,
    Priced,
    Totals,
    apply_batch,
    new_totals,
    scope_keys,
)
from services.finops.pricing import PriceBook
from services.finops.settings import FinOpsConfig
from services.finops.store import budget_key, list_keys
from services.runtime.bus import connect, ensure_topology
from services.runtime.settings import DEFAULT_CONFIG, load_config
from stellwerk.discovery import ping_workers
from stellwerk.supervisor import free_port, nats_server_binary, port_in_use

TENANTS = [f"tenant{i}" for i in range(5)]
UNITS = ["claims", "underwriting", "it", "hr"]
USECASES = ["chat", "summarization", "extraction", "coding", "decision_support"]
NOW = datetime.now(UTC)


def event(n: int, tenant: str | None = None) -> UsageRecorded:
    local = n % 2 == 0
    return UsageRecorded(
        request_id=f"r{n}", correlation_id=f"r{n}", deadline=NOW, occurred_at=NOW,
        tenant=tenant or TENANTS[n % 5], business_unit=UNITS[n % 4], user_role="analyst",
        usecase_class=USECASES[n % 5],  # type: ignore[arg-type]
        call_id=f"r{n}.{'local-vllm' if local else 'api-gpt52'}",
        route="local-vllm" if local else "api-gpt52", deployment="local-vllm-1" if local else "api-gpt52-1",
        model="m", usage=TokenUsage(prompt_tokens=300 + n % 200, completion_tokens=100 + n % 50),
        ttft_ms=10.0, latency_ms=200.0, gpu_seconds=0.4 if local else 0.0, cost=0.001,
    )


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_in_use(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("nats-server did not start")
        time.sleep(0.01)
    return process, f"nats://127.0.0.1:{port}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- 1. the functional core ----------------------------------------------------------------------


def bench_core(count: int) -> float:
    config = load_config(DEFAULT_CONFIG)
    book, tz = PriceBook(FinOpsConfig.load(DEFAULT_CONFIG), config.deployments, config.currency), ZoneInfo("UTC")
    events = [event(n) for n in range(count)]
    docs: dict[str, Totals] = {}
    started = time.perf_counter()
    for start in range(0, count, 500):
        by_key: dict[str, list[Priced]] = {}
        for seq, e in enumerate(events[start : start + 500], start + 1):
            item = Priced(seq, e, book.charge(e))
            for key in scope_keys(e):
                by_key.setdefault(key, []).append(item)
        for key, items in by_key.items():
            doc = docs.get(key) or new_totals(key, "EUR")
            apply_batch(doc, items, incarnation="w", batch=start, ack_floor=0, budgets=[], now=NOW, tz=tz,
                        new_id=IdFactory())
            docs[key] = msgspec.json.decode(msgspec.json.encode(doc), type=Totals)  # the KV round trip's codec
    return count / (time.perf_counter() - started)


# --- 2. one and two worker processes -------------------------------------------------------------


def start_worker(url: str, config: Path, name: str, logs: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STELLWERK_NATS_URL": url, "STELLWERK_CONFIG_FILE": str(config), "STELLWERK_WORKER_ID": name}
    return subprocess.Popen([sys.executable, "-m", "services.finops"], env=env,
                            stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)


def start_router(url: str, config: Path, logs: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STELLWERK_NATS_URL": url, "STELLWERK_CONFIG_FILE": str(config),
           "STELLWERK_WORKER_ID": "router-bench"}
    return subprocess.Popen([sys.executable, "-m", "services.router"], env=env,
                            stdout=(logs / "router.log").open("wb"), stderr=subprocess.STDOUT)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


async def publish_all(nc: Client, events: list[UsageRecorded]) -> None:
    js = nc.jetstream()
    for start in range(0, len(events), 1000):
        await asyncio.gather(*(
            js.publish(subjects.USAGE_RECORDED, encode(e), headers={"Nats-Msg-Id": f"usage:{e.call_id}"})
            for e in events[start : start + 1000]
        ))


async def wait_workers(nc: Client, service: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len((await ping_workers(nc, 0.2)).get(service, [])) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service} workers did not start")


async def bench_workers(url: str, config: Path, logs: Path, count: int, workers: int, offset: int) -> float:
    nc = await connect(url, "bench", persistent=False)
    js = nc.jetstream()
    base = (await js.consumer_info(FINOPS_USAGE.stream, FINOPS_USAGE.durable)).ack_floor.stream_seq \
        if offset else 0
    await publish_all(nc, [event(n) for n in range(offset, offset + count)])
    last = (await js.stream_info("USAGE")).state.last_seq
    processes = [start_worker(url, config, f"finops-bench-{workers}-{i}", logs) for i in range(workers)]
    try:
        first: float | None = None
        while True:
            try:
                info = await js.consumer_info(FINOPS_USAGE.stream, FINOPS_USAGE.durable)
            except Exception:  # noqa: BLE001 - the worker has not created it yet
                await asyncio.sleep(0.01)
                continue
            floor = info.ack_floor.stream_seq or 0
            if first is None and (info.delivered.stream_seq or 0) > base:
                first, first_floor = time.perf_counter(), floor
            if floor >= last:
                elapsed = time.perf_counter() - (first or time.perf_counter())
                return (last - first_floor) / elapsed if elapsed else float("nan")
            await asyncio.sleep(0.02)
    finally:
        stop(processes)
        await nc.close()


# --- 3. enforcement lag --------------------------------------------------------------------------


def screened(tenant: str, n: int) -> RequestScreened:
    return RequestScreened(
        request_id=f"{tenant}-p{n}", correlation_id=f"{tenant}-p{n}", deadline=deadline_in(30), tenant=tenant,
        business_unit="claims", user_role="analyst", usecase_class="chat",
        messages=[ChatMessage(role="user", content="Wie ist der Stand?")],
        attributes=RequestAttributes(data_sensitivity="internal", quality_tier="high"),
        dlp_input=DlpDecision(direction="input", action="allow", rule_id="allow", policy_version="bench",
                              language="de", derived_sensitivity="internal", has_pii=False, has_medical_terms=False),
    )


async def bench_lag(url: str, config: Path, logs: Path, trials: int, probe_s: float) -> tuple[list[float], list[float]]:
    nc = await connect(url, "bench-lag", persistent=False)
    js = nc.jetstream()
    kv = await js.key_value(KV_BUDGETS)
    tenants = [f"lag{i}" for i in range(trials)]
    for tenant in tenants:  # one budget per trial, spent by a single call
        definition = BudgetDef(budget_id=f"{tenant}-cap", scope="tenant", scope_id=tenant, period="month",
                               limit=0.01, action="force_local", source="cli")
        await kv.put(budget_key(definition.budget_id), msgspec.json.encode(definition))
    processes = [start_worker(url, config, "finops-lag", logs), start_router(url, config, logs)]
    changed: dict[str, float] = {}
    state_seen: dict[str, float] = {}

    async def on_router_audit(msg: Msg) -> None:
        audit = decode(msg.data, AuditEvent)
        if audit.rule_id == "budget.exhausted" and audit.tenant not in changed:
            changed[audit.tenant] = time.perf_counter()

    try:
        await wait_workers(nc, "finops", 1)
        await wait_workers(nc, "router", 1)
        watcher = await kv.watch("state.tenant.>")

        async def follow() -> None:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                if b'"exhausted"' in entry.value:
                    state_seen.setdefault(entry.key.removeprefix("state.tenant."), time.perf_counter())

        follower = asyncio.create_task(follow())
        await nc.subscribe(subjects.audit("router"), cb=on_router_audit)
        # every budget evaluated (state ok) before the first trial
        while len([k async for k in _state_keys(kv)]) < trials:
            await asyncio.sleep(0.2)
        lags, finops_lags = [], []
        for tenant in tenants:
            stop_probe = asyncio.Event()

            async def probe(tenant: str = tenant, stop_probe: asyncio.Event = stop_probe) -> None:
                n = 0
                while not stop_probe.is_set():
                    n += 1
                    await js.publish(subjects.REQUEST_SCREENED, encode(screened(tenant, n)))
                    await asyncio.sleep(probe_s)

            prober = asyncio.create_task(probe())
            await asyncio.sleep(0.05)  # the router decides "quality.high" for a while
            # One API call of 10k + 2k tokens: 0.0325 EUR, over the 0.01 budget.
            breach = msgspec.structs.replace(
                event(1, tenant=tenant), call_id=f"{tenant}.breach", request_id=f"{tenant}-breach",
                usage=TokenUsage(prompt_tokens=10_000, completion_tokens=2_000),
            )
            t0 = time.perf_counter()
            await js.publish(subjects.USAGE_RECORDED, encode(breach))
            deadline = time.monotonic() + 10
            while tenant not in changed and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            stop_probe.set()
            await prober
            if tenant in changed:
                lags.append((changed[tenant] - t0) * 1000)
            if tenant in state_seen:
                finops_lags.append((state_seen[tenant] - t0) * 1000)
        follower.cancel()
        return lags, finops_lags
    finally:
        stop(processes)
        await nc.close()


async def _state_keys(kv: KeyValue) -> AsyncIterator[str]:
    for key in await list_keys(kv):
        if key.startswith("state.tenant.lag"):
            yield key


# --- main ----------------------------------------------------------------------------------------


async def run(events: int, trials: int, probe_ms: float) -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = yaml.safe_load(DEFAULT_CONFIG.read_text())
        config["budgets"] = []
        config_path = root / "stellwerk.yaml"
        config_path.write_text(yaml.safe_dump(config))
        nats, url = start_nats(root / "nats")
        try:
            nc = await connect(url, "bench", persistent=False)
            await ensure_topology(nc.jetstream())
            await nc.close()
            with console.status("core…"):
                core = bench_core(min(events, 50_000))
            with console.status("one worker…"):
                one = await bench_workers(url, config_path, root, events, 1, 0)
            with console.status("two workers…"):
                two = await bench_workers(url, config_path, root, events, 2, events)
            with console.status("enforcement lag…"):
                lags, finops_lags = await bench_lag(url, config_path, root, trials, probe_ms / 1000)
        finally:
            nats.terminate()
            nats.wait(timeout=5)
    table = Table(title=f"Stellwerk FinOps — 2-core machine, {events:,} usage events, {trials} lag trials")
    for column in ("measure", "value", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row("core: price + exactly-once ledger, in process", f"{core:,.0f} events/s", "")
    table.add_row("1 FinOps worker (KV compare-and-set per scope and batch)", f"{one:,.0f} events/s", "≥ 5,000")
    table.add_row("2 FinOps workers, together", f"{two:,.0f} events/s", "")
    if lags:
        table.add_row("lag usage event → router decision changed, p50", f"{statistics.median(lags):.1f} ms", "")
        table.add_row("lag usage event → router decision changed, p99", f"{pct(lags, 99):.1f} ms", "≤ 250 ms")
    else:
        table.add_row("lag usage event → router decision changed", "router did not apply budgets", "≤ 250 ms")
    if finops_lags:
        table.add_row("  of which usage event → state.* in KV, p50", f"{statistics.median(finops_lags):.1f} ms", "")
        table.add_row("  of which usage event → state.* in KV, p99", f"{pct(finops_lags, 99):.1f} ms", "")
    table.add_row("probe interval (lag resolution)", f"{probe_ms:g} ms", "")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--probe-ms", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.trials, args.probe_ms))


if __name__ == "__main__":
    main()
