"""Latency and throughput through the full mesh vs. direct calls to the zero-latency simulator.

    uv run python bench/pipeline.py [--requests 300] [--concurrency 16] [--scale dlp=2]

Starts its own mesh (embedded NATS on a free port, every service, simulators with zero
latency) in a temporary directory, measures, prints a table, and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx
import yaml
from load import measure, pct
from rich.console import Console
from rich.table import Table

from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.supervisor import Mesh, free_port, parse_scale

PROMPT = "Bitte fasse den Schadenfall 2024-113 kurz zusammen: Wasserschaden im Keller, Gutachten liegt vor."
API_KEY = "sk-stellwerk-demo"


def bench_config(directory: Path) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["gateway_port"] = free_port()
    for simulator in config["simulators"]:
        simulator.update(port=free_port(), ttft_ms=0, itl_ms=0)
    ports = {s["name"]: s["port"] for s in config["simulators"]}
    for deployment in config["deployments"]:
        deployment["api_base"] = f"http://127.0.0.1:{ports[deployment['route']]}/v1"
    path = directory / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run(requests: int, concurrency: int, scale: str | None) -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mesh = Mesh(config_file=bench_config(root), state_dir=root / "state", nats_port=free_port(),
                    scale=parse_scale(scale))
        with console.status("starting the mesh…"):
            await mesh.start()
        try:
            simulator = next(s for s in mesh.config.simulators if s.name == "local-vllm")
            body = {"model": "stellwerk", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}
            limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                async def direct() -> None:
                    r = await http.post(f"http://127.0.0.1:{simulator.port}/v1/chat/completions",
                                        json={**body, "model": simulator.model})
                    r.raise_for_status()

                async def through_mesh() -> None:
                    r = await http.post(mesh.gateway_url + "/v1/chat/completions", json=body,
                                        headers={"Authorization": f"Bearer {API_KEY}"})
                    r.raise_for_status()

                for call in (direct, through_mesh):  # warm-up: imports, connections, JIT caches
                    await measure(call, 30, 4)
                rows = []
                for name, call in (("direct → simulator", direct), ("gateway → full mesh", through_mesh)):
                    sequential, _ = await measure(call, requests, 1)
                    loaded, rps = await measure(call, requests, concurrency)
                    rows.append((name, sequential, loaded, rps))
        finally:
            mesh.stop()
    table = Table(title=f"Stellwerk pipeline — {requests} requests, 2-core machine, zero-latency model")
    for column in ("path", "p50 ms (1 at a time)", "p95 ms", "p99 ms", f"p50 ms (@{concurrency})",
                   f"p99 ms (@{concurrency})", "requests/s"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, seq, loaded, rps in rows:
        table.add_row(name, f"{pct(seq, 50):.2f}", f"{pct(seq, 95):.2f}", f"{pct(seq, 99):.2f}",
                      f"{pct(loaded, 50):.2f}", f"{pct(loaded, 99):.2f}", f"{rps:.0f}")
    (_, d_seq, d_load, _), (_, m_seq, m_load, _) = rows
    table.add_row("overhead of the mesh", f"+{pct(m_seq, 50) - pct(d_seq, 50):.2f}",
                  f"+{pct(m_seq, 95) - pct(d_seq, 95):.2f}", f"+{pct(m_seq, 99) - pct(d_seq, 99):.2f}",
                  f"+{pct(m_load, 50) - pct(d_load, 50):.2f}", f"+{pct(m_load, 99) - pct(d_load, 99):.2f}", "")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--scale", default=None)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency, args.scale))


if __name__ == "__main__":
    main()
