"""Recovery under load (issue 19): SIGKILL each worker kind, then the embedded nats-server.

    uv run python bench/recovery.py [--concurrency 16] [--scale dlp=2] [--settle 6]

Starts its own mesh (embedded NATS with file storage on a free port, every service, two
simulators) in a temporary directory and supervises it as ``stellwerk up`` does. Sixteen
callers send chat requests through the gateway the whole time. One worker of each kind on
the request and accounting paths is SIGKILLed in turn (the supervisor restarts it; JetStream
redelivers its unacknowledged messages after the ack wait); then the nats-server itself.
Afterwards it checks the records: every answered request accounted once in USAGE (by call
id) and audited once per stage, the hash chains intact, nothing dead-lettered. Prints the
numbers and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from nats.aio.client import Client

from schemas import subjects
from schemas.events import AuditRecord, UsageRecorded, decode
from schemas.streams import AUDIT, AUDIT_INTAKE, DLQ, FINOPS_USAGE, USAGE
from services.audit.reader import scan
from services.audit.stored import StoredMsg
from services.audit.trail import verify_stream
from services.runtime.bus import connect
from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.discovery import ping_workers
from stellwerk.supervisor import Mesh, Part, free_port, parse_scale, port_in_use

API_KEY = "sk-stellwerk-demo"
KINDS = ("dlp", "router", "inference", "finops", "audit")
# Two workers of each request-path stage: a killed worker's messages go to the other one
# after the ack wait. With one, callers also wait for the restart (a worker process starts in
# 3-15 s on a loaded 2-core machine: LiteLLM and spaCy imports).
DEFAULT_SCALE = "dlp=2,router=2,inference=2"


@dataclass(slots=True)
class Call:
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all (connection error, client timeout)
    code: str
    request_id: str | None
    retry_after: bool

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    http: httpx.AsyncClient
    url: str
    calls: list[Call] = field(default_factory=list)
    running: bool = True

    async def caller(self, index: int) -> None:
        body = {"model": "stellwerk", "max_tokens": 16,
                "messages": [{"role": "user", "content": f"Bitte fasse Vorgang {index} kurz zusammen."}]}
        while self.running:
            started = time.monotonic()
            try:
                r = await self.http.post(self.url, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
            except httpx.HTTPError as exc:
                self.calls.append(Call(started, time.monotonic(), 0, type(exc).__name__, None, False))
                await asyncio.sleep(0.1)
                continue
            ended = time.monotonic()
            if r.status_code == 200:
                code, rid = "ok", r.headers.get("x-stellwerk-request-id")
            else:
                error = r.json().get("error", {})
                code, rid = str(error.get("code")), error.get("request_id")
            self.calls.append(Call(started, ended, r.status_code, code, rid, "retry-after" in r.headers))
            if r.status_code != 200:
                await asyncio.sleep(0.1)  # a polite client would wait Retry-After; we want samples

    def between(self, start: float, end: float) -> list[Call]:
        """Calls that overlapped the window [start, end)."""
        return [c for c in self.calls if c.started < end and c.ended >= start]


def bench_config(directory: Path) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["gateway_port"] = free_port()
    for simulator in config["simulators"]:
        simulator.update(port=free_port(), ttft_ms=30, itl_ms=1)
    ports = {s["name"]: s["port"] for s in config["simulators"]}
    for deployment in config["deployments"]:
        deployment["api_base"] = f"http://127.0.0.1:{ports[deployment['route']]}/v1"
    for table in ("users", "teams", "endpoints"):  # the limiter stays on, out of the way
        for spec in config["rate_limits"][table].values():
            spec.update({k: v * 1000 for k, v in spec.items() if k in ("requests", "tokens")})
    path = directory / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def restarted(part: Part, old_pid: int, timeout_s: float = 30.0) -> float:
    """Seconds until the supervisor has a new process running for ``part``."""
    started = time.monotonic()
    while part.process is None or part.process.pid == old_pid or not part.alive:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{part.name} was not restarted")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def serving(nc: Client, service: str, count: int, timeout_s: float = 120.0) -> float:
    """Seconds until ``count`` workers of ``service`` answer the discovery ping again."""
    started = time.monotonic()
    while len((await ping_workers(nc, wait_s=0.2)).get(service, [])) < count:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{service} did not come back")
    return time.monotonic() - started


async def ready(http: httpx.AsyncClient, url: str, timeout_s: float = 60.0) -> float:
    started = time.monotonic()
    while True:
        try:
            if (await http.get(url + "/readyz", timeout=1.0)).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout_s:
            raise RuntimeError("gateway not ready again")
        await asyncio.sleep(0.05)


async def stored(nc: Client, stream: str, subject: str) -> list[StoredMsg]:
    found: list[StoredMsg] = []

    def keep(msg: StoredMsg) -> bool:
        found.append(msg)
        return True

    await scan(nc.jetstream(), stream, subject, keep)
    return found


async def drained(nc: Client, timeout_s: float = 60.0) -> None:
    js = nc.jetstream()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        infos = [await js.consumer_info(c.stream, c.durable) for c in (AUDIT_INTAKE, FINOPS_USAGE)]
        if all(not i.num_pending and not i.num_ack_pending for i in infos):
            return
        await asyncio.sleep(0.25)
    raise RuntimeError("accounting consumers did not drain")


def worst(calls: list[Call]) -> float:
    return max((c.latency for c in calls), default=0.0)


async def run(concurrency: int, scale: str | None, settle_s: float) -> int:
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mesh = Mesh(config_file=bench_config(root), state_dir=root / "state", nats_port=free_port(),
                    scale=parse_scale(scale or DEFAULT_SCALE))
        print("starting the mesh …", flush=True)
        await mesh.start()
        stop = asyncio.Event()
        restarts: list[str] = []
        supervisor = asyncio.create_task(mesh.supervise(stop, on_restart=lambda p: restarts.append(p.name)))
        limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
        try:
            async with httpx.AsyncClient(timeout=90, limits=limits) as http:
                load = Load(http, mesh.gateway_url + "/v1/chat/completions")
                callers = [asyncio.create_task(load.caller(i)) for i in range(concurrency)]
                await asyncio.sleep(3)  # warm-up
                print(f"\n{concurrency} concurrent callers; ack wait {mesh.worker_settings().ack_wait_s:g} s\n")
                print(f"{'SIGKILL':<12} {'serving again':>13} {'requests':>8} {'200':>5} {'other':>5} {'worst s':>8}")
                probe = await connect(mesh.url, "bench-recovery", persistent=False)
                for kind in KINDS:
                    part = next(p for p in mesh.parts if p.name.startswith(kind + "-"))
                    assert part.process is not None
                    pid, killed_at = part.process.pid, time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    await restarted(part, pid)
                    await serving(probe, kind, mesh.scale[kind])
                    back = time.monotonic() - killed_at
                    await asyncio.sleep(settle_s)
                    window = load.between(killed_at, time.monotonic())
                    other = [c for c in window if c.status != 200]
                    print(f"{part.name:<12} {back:>12.2f}s {len(window):>8} {len(window) - len(other):>5} "
                          f"{len(other):>5} {worst(window):>8.2f}")
                    if other:
                        failures.append(f"{part.name}: {Counter(c.code for c in other)}")

                await probe.close()
                # --- the bus itself ------------------------------------------------------------
                assert mesh.nats is not None and mesh.nats.process is not None
                pid, killed_at = mesh.nats.process.pid, time.monotonic()
                os.kill(pid, signal.SIGKILL)
                await restarted(mesh.nats, pid)
                while not port_in_use(mesh.nats_port):
                    await asyncio.sleep(0.01)
                listening = time.monotonic() - killed_at
                await ready(http, mesh.gateway_url)
                back = time.monotonic() - killed_at
                ready_at = time.monotonic()
                await asyncio.sleep(settle_s)
                load.running = False
                await asyncio.gather(*callers)

                in_flight = [c for c in load.calls if c.started < killed_at <= c.ended]
                during = [c for c in load.calls if killed_at <= c.started < ready_at]
                after = [c for c in load.calls if c.started >= ready_at]
                refused = [c for c in during if c.status == 503 and c.code == "bus_unavailable"]
                slow_refusals = [c for c in refused if c.latency > 1.0]
                untyped = [c for c in during if c.status != 200 and c not in refused]
                print(f"\nSIGKILL nats-server: listening again after {listening:.2f} s, gateway ready after {back:.2f} s")
                print(f"  in flight at the kill: {len(in_flight)} — {dict(Counter(c.code for c in in_flight))}, "
                      f"worst {worst(in_flight):.2f} s")
                print(f"  sent while away: {len(during)} — 503 bus_unavailable {len(refused)} "
                      f"(worst {worst(refused):.3f} s, all with Retry-After: {all(c.retry_after for c in refused)}), "
                      f"200 {sum(c.status == 200 for c in during)}, other {len(untyped)}")
                print(f"  sent after: {len(after)} — 200 {sum(c.status == 200 for c in after)}, "
                      f"worst {worst(after):.2f} s")
                if listening > 5:
                    failures.append(f"nats-server back after {listening:.1f} s")
                if slow_refusals or untyped:
                    failures.append(f"outage: {len(slow_refusals)} refusals over 1 s, untyped {Counter(c.code for c in untyped)}")
                if any(c.status != 200 for c in after):
                    failures.append(f"after the outage: {Counter(c.code for c in after if c.status != 200)}")
                if any(c.status not in (200, 503, 504) for c in in_flight):
                    failures.append(f"in flight: {Counter(c.code for c in in_flight)}")

            # --- the records -------------------------------------------------------------------
            nc = await connect(mesh.url, "bench-recovery", persistent=False)
            try:
                await drained(nc)
                answered = {c.request_id for c in load.calls if c.status == 200 and c.request_id}
                refused_ids = {c.request_id for c in load.calls if c.code == "bus_unavailable" and c.request_id}
                usage = [decode(m.data, UsageRecorded) for m in await stored(nc, USAGE.name, subjects.USAGE_RECORDED)]
                by_call = Counter(u.call_id for u in usage)
                by_request = Counter(u.request_id for u in usage)
                records = [decode(m.data, AuditRecord) for m in await stored(nc, AUDIT.name, subjects.AUDIT_CHAIN_ALL)]
                stages: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
                for record in records:
                    stages[record.event.request_id][(record.event.stage, record.event.outcome)] += 1
                report = await verify_stream(nc.jetstream(), AUDIT.name)
                dead = (await nc.jetstream().stream_info(DLQ.name)).state.messages
            finally:
                await nc.close()
            twice = [rid for rid, seen in stages.items() if max(seen.values()) > 1]
            no_usage = [rid for rid in answered if by_request[rid] == 0]
            no_audit = [rid for rid in answered if not stages.get(rid)]
            all_calls = load.calls
            print(f"\nrequests {len(all_calls)}: 200 {sum(c.status == 200 for c in all_calls)}, "
                  f"503 bus_unavailable {sum(c.code == 'bus_unavailable' for c in all_calls)}, "
                  f"other {dict(Counter(c.code for c in all_calls if c.status != 200 and c.code != 'bus_unavailable'))}")
            print(f"usage records {len(usage)}: calls counted twice {sum(n > 1 for n in by_call.values())}, "
                  f"answered requests without usage {len(no_usage)}, refused requests with usage "
                  f"{sum(by_request[r] > 0 for r in refused_ids)}")
            print(f"audit records {len(records)}: requests with a stage recorded twice {len(twice)}, "
                  f"answered requests without audit {len(no_audit)}; chains intact {report.ok}; "
                  f"dead letters {dead}; restarts {Counter(r.split('-')[0] for r in restarts)}")
            if any(n > 1 for n in by_call.values()) or no_usage or twice or no_audit or not report.ok or dead:
                failures.append("records: duplicates, gaps, a broken chain or dead letters")
            if any(by_request[r] > 0 for r in refused_ids):
                failures.append("a request refused with bus_unavailable was processed anyway")
        finally:
            stop.set()
            await supervisor
            mesh.stop()
    print("\nOK" if not failures else "\nFAILED:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--scale", default=None, help=f"workers per service (default {DEFAULT_SCALE})")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds of load after each restart")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args.concurrency, args.scale, args.settle)))


if __name__ == "__main__":
    main()
