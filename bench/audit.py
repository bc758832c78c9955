"""Audit throughput: records chained per second per worker, and replay/verify speed.

    uv run python bench/audit.py [--events 20000] [--tenants 1] [--workers 1,2] [--per-record]

For each worker count: a fresh nats-server (JetStream, temporary directory), ``--events`` audit
events published up front, then that many ``python -m services.audit`` processes drain them.
The append rate is taken from the chain records' store times (first to last), so process
start-up does not count. Then the chain is replayed (ordered consumer, JSONL rendering) and
verified from the stream. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table

from schemas import subjects
from schemas.events import AuditEvent, EntityCount, deadline_in, encode
from schemas.streams import AUDIT
from services.audit.query import Selection
from services.audit.stored import StoredMsg, to_line
from services.audit.trail import replay, verify_stream
from services.runtime.bus import connect, ensure_topology
from stellwerk.supervisor import free_port, nats_server_binary, port_in_use

STAGES = ("gateway", "dlp_input", "router", "inference", "dlp_output")


def sample_event(i: int, tenants: int) -> AuditEvent:
    """A realistic event: a DLP decision with entities, a routing attribute set, a model call."""
    stage = STAGES[i % len(STAGES)]
    return AuditEvent(
        request_id=f"req-{i // len(STAGES):08d}", correlation_id=f"corr-{i // len(STAGES):08d}",
        deadline=deadline_in(60), tenant=f"tenant-{i % tenants}", business_unit="claims", user_role="analyst",
        usecase_class="summarization", stage=stage, outcome="allow", rule_id="sensitivity.internal.allow",
        policy_version="sha256:" + "ab" * 32, data_sensitivity="internal",
        entities=[EntityCount(type="EMAIL_ADDRESS", count=1)], route="local-vllm", model="llama-3.1-8b",
        model_version="2024-07", prompt_tokens=412, completion_tokens=128, latency_ms=812.5,
        attributes={"quality_tier": "standard", "budget_class": "standard"},
    )


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.store = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while not port_in_use(self.port):
            time.sleep(0.01)
        self.url = f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.store.cleanup()


async def run_case(events: int, tenants: int, workers: int, per_record: bool) -> dict[str, float]:
    server = Server()
    processes: list[subprocess.Popen[bytes]] = []
    nc = await connect(server.url, "bench-audit", persistent=False)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        for i in range(events):
            event = sample_event(i, tenants)
            await nc.publish(subjects.audit(event.stage), encode(event))
        await nc.flush()
        while (await js.stream_info(AUDIT.name)).state.messages < events:
            await asyncio.sleep(0.05)
        env = {**os.environ, "STELLWERK_NATS_URL": server.url, "STELLWERK_AUDIT_ATOMIC_BATCHES": str(not per_record)}
        processes = [
            subprocess.Popen([sys.executable, "-m", "services.audit"], env=env | {"STELLWERK_WORKER_ID": f"bench-{n}"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for n in range(workers)
        ]
        while True:
            info = await js.stream_info(AUDIT.name, subjects_filter=subjects.AUDIT_CHAIN_ALL)
            if sum((info.state.subjects or {}).values()) >= events:
                break
            await asyncio.sleep(0.1)

        times: list[int] = []
        sink = open(os.devnull, "wb")  # noqa: SIM115 - closed below

        def render(msg: StoredMsg) -> None:
            times.append(msg.time_ns)
            sink.write(to_line(msg))

        started = time.perf_counter()
        replayed = await replay(js, AUDIT.name, subjects.AUDIT_CHAIN_ALL, Selection(), render)
        replay_s = time.perf_counter() - started
        sink.close()
        started = time.perf_counter()
        report = await verify_stream(js, AUDIT.name)
        verify_s = time.perf_counter() - started
        assert report.ok and report.records == events == replayed, (report, replayed)
        append_rate = events / ((max(times) - min(times)) / 1e9)
        return {
            "append": append_rate, "per_worker": append_rate / workers,
            "replay": replayed / replay_s, "verify": report.records / verify_s,
            "checkpoints": float(report.checkpoints),
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        await nc.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to measure")
    parser.add_argument("--per-record", action="store_true", help="also measure one publish-and-ack per record")
    args = parser.parse_args()
    table = Table("append mode", "workers", "events", "tenants", "append rec/s", "per worker",
                  "replay rec/s", "verify rec/s", "checkpoints", title=f"audit, {os.cpu_count()} cores")
    modes = [False, True] if args.per_record else [False]
    for per_record in modes:
        for workers in (int(w) for w in args.workers.split(",")):
            result = asyncio.run(run_case(args.events, args.tenants, workers, per_record))
            table.add_row(
                "per record" if per_record else "atomic batch", str(workers), f"{args.events:,}", str(args.tenants),
                f"{result['append']:,.0f}", f"{result['per_worker']:,.0f}", f"{result['replay']:,.0f}",
                f"{result['verify']:,.0f}", f"{result['checkpoints']:.0f}",
            )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
