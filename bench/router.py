"""Routing policy cost: decisions per second and evaluation latency (p50/p99).

    uv run python bench/router.py [--iterations 10000] [--mesh-requests 500]

Single thread, no bus: the compiled Rego policy alone, the full RoutingEngine.decide
(typed input, policy, validated output) and the per-request prompt token count. Inputs
cycle through the policy's own case table, so every rule of the table is exercised.
Target (issue 4): policy evaluation p99 ≤ 1 ms.

In the mesh: a real nats-server and one router worker process. The router's added latency
is the time from publishing ``request.screened`` to reading ``request.routed``, minus the
same measurement for a bare JetStream hop (publish ``request.routed``, read it back).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from schemas.events import ChatMessage
from services.router.context_length import DEFAULT_ENCODING, load_encoding, measure_prompt
from services.router.decision import RoutingEngine, RoutingInput
from services.router.policy_store import ENTRYPOINT, SHIPPED_POLICY_DIR
from services.runtime.rego import CompiledPolicy

TARGET_P99_MS = 1.0
PARAGRAPH = (
    "Bitte fasse den Schadenfall 2024-113 zusammen: Wasserschaden im Keller, Gutachten liegt vor, "
    "die Versicherungsnehmerin bittet um Rückruf. The adjuster's notes follow in English. "
)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    per_second: float
    p50_ms: float
    p99_ms: float
    note: str = ""


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, round(q * (len(sorted_ns) - 1)))
    return sorted_ns[index] / 1e6


def measure(name: str, call: Callable[[int], Any], iterations: int, note: str = "") -> Row:
    """Time ``call(i)`` per iteration after a warm-up; throughput from the summed latencies."""
    for i in range(min(1000, iterations)):
        call(i)
    latencies: list[int] = []
    for i in range(iterations):
        started = time.perf_counter_ns()
        call(i)
        latencies.append(time.perf_counter_ns() - started)
    latencies.sort()
    return Row(name, iterations / (sum(latencies) / 1e9), _percentile(latencies, 0.5),
               _percentile(latencies, 0.99), note)


def policy_rows(iterations: int) -> list[Row]:
    cases = json.loads((SHIPPED_POLICY_DIR / "routing_test.json").read_text())
    documents: list[dict[str, Any]] = [case["input"] for case in cases]
    typed = [msgspec.convert(document, RoutingInput) for document in documents]
    policy = CompiledPolicy.from_dir(SHIPPED_POLICY_DIR, ENTRYPOINT)
    engine = RoutingEngine()
    note = f"{len(documents)} inputs, all 12 rules"
    return [
        measure("policy alone (compiled Rego)", lambda i: policy.evaluate(documents[i % len(documents)]),
                iterations, note),
        measure("RoutingEngine.decide", lambda i: engine.decide(typed[i % len(typed)]), iterations,
                "typed in/out, reload check"),
    ]


def _counting(messages: list[ChatMessage]) -> Callable[[int], Any]:
    return lambda _i: measure_prompt(messages)


def token_rows(iterations: int) -> list[Row]:
    load_encoding(DEFAULT_ENCODING)  # loaded once per process at startup, not per request
    rows: list[Row] = []
    for paragraphs in (1, 20, 200):
        messages = [
            ChatMessage(role="system", content="Du bist ein hilfreicher Assistent."),
            ChatMessage(role="user", content=PARAGRAPH * paragraphs),
        ]
        tokens = measure_prompt(messages).tokens
        rows.append(measure(f"prompt tokens, {tokens} tokens", _counting(messages),
                            max(100, iterations // (10 * paragraphs)), DEFAULT_ENCODING))
    return rows


async def mesh_rows(requests: int) -> list[Row]:
    """Router stage latency through a real nats-server, against a bare JetStream hop."""
    import asyncio
    import os
    import subprocess
    import sys
    import tempfile

    from schemas import subjects
    from schemas.events import DlpDecision, RequestScreened, deadline_in, encode, new_id
    from schemas.streams import INFERENCE
    from services.runtime.bus import connect, ensure_topology
    from services.runtime.settings import DEFAULT_CONFIG
    from stellwerk.discovery import ping_workers
    from stellwerk.supervisor import free_port, nats_server_binary, port_in_use

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", tmp],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not port_in_use(port):
            await asyncio.sleep(0.01)
        url = f"nats://127.0.0.1:{port}"
        nc = await connect(url, "bench", persistent=False)
        js = nc.jetstream()
        await ensure_topology(js)
        router = subprocess.Popen([sys.executable, "-m", "services.router"],
                                  env={**os.environ, "STELLWERK_NATS_URL": url, "STELLWERK_CONFIG_FILE": str(DEFAULT_CONFIG)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not (await ping_workers(nc, 0.2)).get("router"):
                await asyncio.sleep(0.1)
            # No inference worker runs here: the bench reads the routed requests in its place.
            reader = await js.pull_subscribe(subjects.REQUEST_ROUTED, durable=INFERENCE.durable, stream="PIPELINE")
            decision = DlpDecision(direction="input", action="allow", rule_id="dlp.allow", policy_version="v",
                                   language="de", derived_sensitivity="internal", has_pii=False, has_medical_terms=False)

            def screened() -> RequestScreened:
                request_id = new_id()
                return RequestScreened(
                    request_id=request_id, correlation_id=request_id, deadline=deadline_in(30), tenant="acme",
                    business_unit="claims", user_role="analyst", usecase_class="chat",
                    messages=[ChatMessage(role="user", content=PARAGRAPH)], dlp_input=decision)

            async def hop(subject: str) -> int:
                started = time.perf_counter_ns()
                await js.publish(subject, encode(screened()))
                (msg,) = await reader.fetch(1, timeout=10)
                await msg.ack()
                return time.perf_counter_ns() - started

            rows = []
            for name, subject in (("bare JetStream hop (publish → read)", subjects.REQUEST_ROUTED),
                                  ("through the router (screened → routed)", subjects.REQUEST_SCREENED)):
                for _ in range(50):
                    await hop(subject)
                latencies = sorted([await hop(subject) for _ in range(requests)])
                rows.append(Row(name, requests / (sum(latencies) / 1e9), _percentile(latencies, 0.5),
                                _percentile(latencies, 0.99), "one at a time"))
            bare, routed = rows
            rows.append(Row("router's added latency", 0.0, routed.p50_ms - bare.p50_ms,
                            routed.p99_ms - bare.p99_ms, "difference of the two"))
            return rows
        finally:
            router.terminate()
            router.wait(timeout=10)
            await nc.close()
            server.terminate()
            server.wait(timeout=5)


def render(rows: list[Row]) -> Table:
    table = Table(title="Router: decision cost (1 thread, no bus)")
    for column in ("measured", "per second", "p50 ms", "p99 ms", "note"):
        table.add_column(column, justify="left" if column in ("measured", "note") else "right")
    for row in rows:
        table.add_row(row.name, f"{row.per_second:,.0f}" if row.per_second else "", f"{row.p50_ms:.3f}", f"{row.p99_ms:.3f}", row.note)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--mesh-requests", type=int, default=500, help="0 skips the in-mesh part")
    args = parser.parse_args()
    rows = policy_rows(args.iterations) + token_rows(args.iterations)
    if args.mesh_requests:
        import asyncio

        rows += asyncio.run(mesh_rows(args.mesh_requests))
    console = Console(width=120)  # a readable table also when piped to a file
    console.print(render(rows))
    verdict = "met" if rows[0].p99_ms <= TARGET_P99_MS else "NOT met"
    console.print(f"policy evaluation p99 {rows[0].p99_ms:.3f} ms — target ≤ {TARGET_P99_MS} ms {verdict}")


if __name__ == "__main__":
    main()
