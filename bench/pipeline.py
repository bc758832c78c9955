"""Latency, throughput and CPU per request: the model direct, LiteLLM Proxy and Stellwerk, in one run.

    uv run python bench/pipeline.py                       # zero-latency model: the overhead and the ceiling
    uv run python bench/pipeline.py --realistic           # ~100 ms answers (20 ms TTFT, 2 ms/token, 40 tokens)
    uv run python bench/pipeline.py --ttft-ms 20 --itl-ms 2 --answer-tokens 40 --json out.json

One vLLM simulator (its own process, free port) serves all three paths:

1. **direct → simulator**;
2. **LiteLLM Proxy** (pinned, own virtual environment, see ``bench/reference.py``) → simulator;
3. **Stellwerk gateway → full mesh** (embedded NATS, every service, both routes' deployments
   on the same simulator) → simulator.

Each path is started only for its own phases and stopped before the next starts, so no
idle process of another path shares the cores. Per path: a warm-up, then ``--sequential-requests``
one at a time, then ``--requests`` at each ``--concurrency``. Reported: p50/p95/p99, requests/s,
errors; Stellwerk's added latency and throughput ratio against both references; CPU
milliseconds per request of every process (gateway, each worker, nats-server, the simulator,
the proxy) from ``/proc/<pid>/stat`` before and after each phase, the load generator's own,
and the CPU other users of the machine took meanwhile (a noise indicator). ``--json FILE``
writes every number. Everything started is stopped at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import (
    CLIENT,
    DIRECT,
    LITELLM,
    PATH_TITLES,
    SHORT_TITLES,
    STELLWERK,
    CpuSnapshot,
    CpuUse,
    HttpStatusError,
    Run,
    Scenario,
    Target,
    answer_text,
    client_session,
    console,
    drive,
    finite,
    fmt_ms,
    idle_cpu,
    machine_info,
    parse_concurrency,
    pct,
    prompt_text,
    ratio,
    run_async,
    workdir,
    write_json,
)
from bench.reference import LITELLM_VERSION, SimulatorOptions

REALISTIC = {"ttft_ms": 20.0, "itl_ms": 2.0, "answer_tokens": 40}  # 20 + 39 x 2 ≈ 100 ms per answer
SETTLE_S = 0.5  # after a phase: let asynchronous work (audit, usage) finish inside the window


@dataclass
class Phase:
    path: str
    concurrency: int
    requests: int
    run: Run[dict[str, Any]]
    cpu: CpuUse

    def summary(self) -> dict[str, Any]:
        lat = self.run.latencies_ms
        return {
            "path": self.path,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.run.ok,
            "errors": dict(self.run.errors),
            "first_error": self.run.first_error,
            "wall_s": round(self.run.wall_s, 3),
            "requests_per_s": round(self.run.rps, 2),
            "latency_ms": {q: finite(pct(lat, float(q[1:]))) for q in ("p50", "p95", "p99")}
            | {"mean": finite(sum(lat) / len(lat)) if lat else None, "max": finite(max(lat)) if lat else None},
            "cpu": self.cpu.as_dict(self.run.ok),
            "latencies_ms": [round(v, 3) for v in lat],
        }


def chat_call(http: Any, target: Target, body: dict[str, Any]) -> Any:
    payload = {**body, "model": target.model}

    async def call() -> dict[str, Any]:
        async with http.post(target.url, json=payload, headers=target.headers) as response:
            if response.status != 200:
                raise HttpStatusError(response.status, await response.text())
            data: dict[str, Any] = await response.json(content_type=None)
        if not data.get("choices"):
            raise ValueError("answer without choices")
        return data

    return call


async def measure_path(target: Target, body: dict[str, Any], sequential: int, requests: int,
                       levels: list[int], warmup: int, console: Console) -> tuple[list[Phase], dict[str, Any]]:
    phases: list[Phase] = []
    info: dict[str, Any] = {}
    async with client_session(max(levels)) as http:
        call = chat_call(http, target, body)
        warm = await drive(call, warmup, 4)
        if warm.ok == 0:
            raise SystemExit(f"{target.title}: every warm-up request failed: {warm.first_error}")
        sample = warm.samples[0]
        info["usage"] = sample.get("usage")
        info["answer_chars"] = len(sample["choices"][0]["message"].get("content") or "")
        if isinstance(sample.get("stellwerk"), dict):
            info["stellwerk"] = {k: sample["stellwerk"].get(k) for k in ("route", "deployment", "dlp_action")
                                 if k in sample["stellwerk"]}
        await asyncio.sleep(SETTLE_S)
        info["idle_cpu_ms_per_s"] = await idle_cpu(target.processes())
        for concurrency, count in [(1, sequential), *((c, requests) for c in levels if c > 1)]:
            if count <= 0:
                continue
            with console.status(f"{target.title}: {count} requests at {concurrency} concurrent…"):
                before = CpuSnapshot.take(target.processes())
                run = await drive(call, count, concurrency)
                await asyncio.sleep(SETTLE_S)
                cpu = before.until(CpuSnapshot.take(target.processes()))
            phases.append(Phase(target.key, concurrency, count, run, cpu))
            errors = f", {sum(run.errors.values())} errors ({run.first_error})" if run.errors else ""
            console.print(f"  {target.title} @{concurrency}: p50 {fmt_ms(pct(run.latencies_ms, 50))} ms, "
                          f"{run.rps:.1f} req/s{errors}")
    return phases, info


def comparisons(phases: list[Phase]) -> list[dict[str, Any]]:
    by = {(p.path, p.concurrency): p for p in phases}
    rows = []
    for (path, concurrency), mine in sorted(by.items()):
        if path != STELLWERK:
            continue
        row: dict[str, Any] = {"concurrency": concurrency}
        for ref in (DIRECT, LITELLM):
            other = by.get((ref, concurrency))
            if other is None:
                continue
            row[f"vs_{ref}"] = {
                **{f"added_{q}_ms": finite(pct(mine.run.latencies_ms, n) - pct(other.run.latencies_ms, n))
                   for q, n in (("p50", 50), ("p95", 95), ("p99", 99))},
                "throughput_ratio": finite(ratio(mine.run.rps, other.run.rps)),
            }
        rows.append(row)
    return rows


def print_report(console: Console, phases: list[Phase], infos: dict[str, Any], title: str) -> None:
    table = Table(title=title, caption="; ".join(f"{SHORT_TITLES[k]}: {v}" for k, v in PATH_TITLES.items()))
    for column in ("path", "concurrent", "ok", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s",
                   "CPU ms/req (served)", "CPU ms/req (client)"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for p in phases:
        lat = p.run.latencies_ms
        served = sum(p.cpu.processes.values()) * 1000 / max(p.run.ok, 1)
        table.add_row(SHORT_TITLES[p.path], str(p.concurrency), str(p.run.ok), str(sum(p.run.errors.values())),
                      fmt_ms(pct(lat, 50)), fmt_ms(pct(lat, 95)), fmt_ms(pct(lat, 99)), f"{p.run.rps:.1f}",
                      f"{served:.2f}", f"{p.cpu.client * 1000 / max(p.run.ok, 1):.2f}")
    console.print(table)

    table = Table(title="Stellwerk against the references (added ms: Stellwerk minus reference; "
                        "throughput: Stellwerk ÷ reference)")
    for column in ("concurrent", "vs direct p50", "p95", "p99", "req/s ratio",
                   "vs LiteLLM p50", "p95", "p99", "req/s ratio"):
        table.add_column(column, justify="right")
    for row in comparisons(phases):
        cells = [str(row["concurrency"])]
        for ref in (DIRECT, LITELLM):
            cmp = row.get(f"vs_{ref}")
            if cmp is None:
                cells += ["–"] * 4
                continue
            cells += [fmt_ms(cmp[f"added_{q}_ms"] if cmp[f"added_{q}_ms"] is not None else math.nan, signed=True)
                      for q in ("p50", "p95", "p99")]
            tr = cmp["throughput_ratio"]
            cells.append(f"{tr:.2f}×" if tr is not None else "–")
        table.add_row(*cells)
    console.print(table)

    levels = sorted({p.concurrency for p in phases})
    table = Table(title="CPU milliseconds per successful request, per process (from /proc/<pid>/stat)")
    table.add_column("path")
    table.add_column("process")
    for c in levels:
        table.add_column(f"@{c}", justify="right")
    table.add_column("idle ms/s", justify="right")
    for path in (DIRECT, LITELLM, STELLWERK):
        mine = {p.concurrency: p for p in phases if p.path == path}
        if not mine:
            continue
        names: list[str] = []
        for p in mine.values():
            names += [n for n in p.cpu.processes if n not in names]

        def cell(p: Phase | None, value: float | None) -> str:
            return "–" if p is None or value is None else f"{value * 1000 / max(p.run.ok, 1):.2f}"

        idle: dict[str, float] = infos.get(path, {}).get("idle_cpu_ms_per_s", {})
        for index, name in enumerate(names):
            table.add_row(SHORT_TITLES[path] if index == 0 else "", name,
                          *(cell(mine.get(c), mine[c].cpu.processes.get(name) if c in mine else None)
                            for c in levels), f"{idle.get(name, math.nan):.1f}")
        table.add_row("", "[bold]all processes of this path[/bold]",
                      *(cell(mine.get(c), sum(mine[c].cpu.processes.values()) if c in mine else None)
                        for c in levels), f"{sum(idle.values()):.1f}")
        table.add_row("", CLIENT, *(cell(mine.get(c), mine[c].cpu.client if c in mine else None) for c in levels), "")
        table.add_row("", "[dim]other load on the machine[/dim]",
                      *(cell(mine.get(c), mine[c].cpu.other if c in mine else None) for c in levels), "",
                      end_section=True)
    console.print(table)


async def run(args: argparse.Namespace) -> None:
    out = console()
    levels = parse_concurrency(args.concurrency)
    answer_tokens: int = args.answer_tokens
    max_tokens: int = args.max_tokens or answer_tokens
    options = SimulatorOptions(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, canned_text=answer_text(answer_tokens))
    body = {"messages": [{"role": "user", "content": prompt_text(args.prompt_chars)}], "max_tokens": max_tokens}
    scenario_info = {
        "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "answer_tokens": answer_tokens, "max_tokens": max_tokens,
        "prompt_chars": args.prompt_chars, "sequential_requests": args.sequential_requests,
        "requests": args.requests, "concurrency": levels, "warmup": args.warmup, "scale": args.scale,
        "litellm_version": LITELLM_VERSION,
        "model_time_ms": args.ttft_ms + args.itl_ms * max(min(answer_tokens, max_tokens) - 1, 0),
    }
    phases: list[Phase] = []
    infos: dict[str, Any] = {}
    started = time.perf_counter()
    machine = machine_info()
    out.print(f"scenario: TTFT {args.ttft_ms:g} ms, {args.itl_ms:g} ms/token, {answer_tokens}-token answers "
              f"(≈{scenario_info['model_time_ms']:.0f} ms of model time), {args.prompt_chars}-character prompt; "
              f"load average {machine['loadavg_at_start']} on {machine['cpus']} CPUs")
    with workdir(args.keep) as directory:
        scenario = Scenario(options, directory, args.scale, log=out.print)
        async with scenario.paths() as targets:
            async for target in targets:
                path_phases, infos[target.key] = await measure_path(
                    target, body, args.sequential_requests, args.requests, levels, args.warmup, out)
                phases += path_phases
    title = (f"Stellwerk pipeline — TTFT {args.ttft_ms:g} ms, {args.itl_ms:g} ms/token, {answer_tokens} tokens, "
             f"{args.prompt_chars}-char prompt, {machine['cpus']} CPUs")
    print_report(out, phases, infos, title)
    out.print(f"total {time.perf_counter() - started:.0f} s; load average now "
              f"{[round(x, 2) for x in os.getloadavg()]} (other users of the machine add noise)")
    write_json(args.json, {
        "bench": "pipeline", "scenario": scenario_info, "machine": machine,
        "paths": infos, "phases": [p.summary() for p in phases], "stellwerk_vs_references": comparisons(phases),
    })
    if args.json:
        out.print(f"numbers written to {args.json}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=320, help="requests per concurrent phase")
    parser.add_argument("--sequential-requests", type=int, default=150, help="requests sent one at a time")
    parser.add_argument("--concurrency", default="16,64", help="concurrent phases, comma-separated")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="simulator: time to first token")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="simulator: time per further token")
    parser.add_argument("--answer-tokens", type=int, default=32, help="tokens the simulator answers")
    parser.add_argument("--max-tokens", type=int, default=None, help="max_tokens sent (default: --answer-tokens)")
    parser.add_argument("--prompt-chars", type=int, default=200)
    parser.add_argument("--realistic", action="store_true",
                        help="~100 ms answers: --ttft-ms 20 --itl-ms 2 --answer-tokens 40")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests per path first")
    parser.add_argument("--scale", default=None, help="mesh workers, e.g. dlp=2,inference=2")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this file")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and state in this directory")
    args = parser.parse_args(argv)
    if args.realistic:
        for name, value in REALISTIC.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run_async(lambda: run(args))


if __name__ == "__main__":
    main()
