"""Tool call latency through the tool gateway vs. a direct MCP call to the same server.

    uv run python bench/tools.py [--requests 300] [--concurrency 8]

Starts NATS, one tool gateway worker and the tickets MCP server over streamable HTTP in a
temporary directory; calls the read-only ``tickets.get_ticket`` directly (official MCP
client) and through the gateway (policy, JSON Schema, DLP on arguments and result,
injection check, KV rate limits, audit); prints a table and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import yaml
from load import measure, pct
from mcp import Client
from rich.console import Console
from rich.table import Table

from services.runtime.bus import connect
from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.supervisor import Mesh, free_port
from stellwerk.tools_client import ToolsClient


def bench_config(directory: Path, port: int) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["tool_servers"] = [{
        "name": "tickets", "transport": "http", "url": f"http://127.0.0.1:{port}/mcp",
        "launch": ["-m", "services.mcp_servers.tickets", "--transport", "http", "--port", str(port)],
        "health_url": f"http://127.0.0.1:{port}/health",
    }]
    # Generous limits: the limiter's KV round trips are measured, its refusals are not.
    config["tool_rate_limits"] = {scope: {"*": {"requests": 1e9, "per_s": 60}}
                                  for scope in ("agents", "applications", "users")}
    path = directory / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run(requests: int, concurrency: int) -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        mesh = Mesh(config_file=bench_config(root, port), state_dir=root / "state", nats_port=free_port(),
                    scale={"toolgateway": 1, "dlp": 1}, start_simulators=False,  # DLP screens tool calls
                    extra_env={"STELLWERK_TICKETS_DB": str(root / "tickets.db")})
        with console.status("starting NATS, the tool gateway, a DLP worker and the tickets server…"):
            await mesh.start()
        try:
            nc = await connect(mesh.url, "bench-tools", persistent=False)
            tools = ToolsClient(nc, tenant="acme-insurance", business_unit="claims", user_role="analyst",
                                agent_id="bench", user_id="bench-user")
            async with Client(f"http://127.0.0.1:{port}/mcp", cache=None) as mcp:
                async def direct() -> None:
                    result = await mcp.call_tool("get_ticket", {"ticket_id": 1})
                    assert not result.is_error

                async def through_gateway() -> None:
                    result = await tools.call("tickets.get_ticket", {"ticket_id": 1})
                    assert result.status == "ok", result.error

                for call in (direct, through_gateway):  # warm-up: connections, caches, DLP models
                    await measure(call, 30, 4)
                rows = []
                for name, call in (("direct MCP call", direct), ("through the tool gateway", through_gateway)):
                    sequential, _ = await measure(call, requests, 1)
                    loaded, rps = await measure(call, requests, concurrency)
                    rows.append((name, sequential, loaded, rps))
            await nc.close()
        finally:
            mesh.stop()
    table = Table(title=f"tickets.get_ticket — {requests} calls, streamable HTTP, 2-core machine")
    for column in ("path", "p50 ms (1 at a time)", "p95 ms", "p99 ms", f"p50 ms (@{concurrency})",
                   f"p99 ms (@{concurrency})", "calls/s"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, seq, loaded, rps in rows:
        table.add_row(name, f"{pct(seq, 50):.2f}", f"{pct(seq, 95):.2f}", f"{pct(seq, 99):.2f}",
                      f"{pct(loaded, 50):.2f}", f"{pct(loaded, 99):.2f}", f"{rps:.0f}")
    (_, d_seq, d_load, _), (_, g_seq, g_load, _) = rows
    table.add_row("overhead of the gateway", f"+{pct(g_seq, 50) - pct(d_seq, 50):.2f}",
                  f"+{pct(g_seq, 95) - pct(d_seq, 95):.2f}", f"+{pct(g_seq, 99) - pct(d_seq, 99):.2f}",
                  f"+{pct(g_load, 50) - pct(d_load, 50):.2f}", f"+{pct(g_load, 99) - pct(d_load, 99):.2f}", "")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency))


if __name__ == "__main__":
    main()
