"""Streamed answers: the model direct, LiteLLM Proxy and Stellwerk on one simulator, in one run.

    uv run python bench/streaming.py                          # 500-token answers, 20 ms TTFT, 2 ms/token
    uv run python bench/streaming.py --itl-ms 5 --answer-tokens 800 --concurrency 16,64 --json out.json

Every request has ``stream: true``; the simulator streams one SSE event per token after its
time to first token. Per stream the client records when the response headers, the first
body byte, the first event with content and the last byte arrived, how many SSE events and
content events came, and how they are spread over the stream: the share of content events
received before the last 10 % of the stream's total time (≈ 0.9 when the text flows as it
is generated, ≈ 0 when it is buffered and sent at the end). Reported per path, one stream at
a time and at each ``--concurrency``: p50/p95/p99 of time to first content and to last byte,
events, spread, streams/s, errors, CPU per stream of every process, and Stellwerk's added
time to first content / last byte against both references. A path that buffers shows it
here: few events, a first content time close to the last byte, a spread near zero.
``--json FILE`` writes every number. Everything started is stopped at the end, on errors
and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
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
    peak_rss,
    prompt_text,
    ratio,
    rss_bytes,
    run_async,
    workdir,
    write_json,
)
from bench.reference import LITELLM_VERSION, SimulatorOptions

LATE_SHARE = 0.10  # "the last 10 % of the stream's time"
SETTLE_S = 0.5
_decode = msgspec.json.Decoder().decode


class StreamError(ValueError):
    """The stream broke the protocol: no [DONE], an error event, a body that is not SSE."""


@dataclass
class StreamSample:
    headers_ms: float  # response headers received
    first_byte_ms: float  # first body byte
    first_content_ms: float  # first event carrying answer text
    last_content_ms: float
    last_byte_ms: float  # end of the body
    events: int  # SSE data events, [DONE] not counted
    content_events: int
    content_chars: int
    early_share: float  # content events received before the last 10 % of last_byte_ms
    max_gap_ms: float  # longest pause between two content events
    finish_reason: str | None


def stream_call(http: aiohttp.ClientSession, target: Target, body: dict[str, Any]) -> Callable[[], Awaitable[StreamSample]]:
    payload = {**body, "model": target.model, "stream": True}

    async def call() -> StreamSample:
        started = time.perf_counter()
        async with http.post(target.url, json=payload, headers=target.headers) as response:
            headers_at = time.perf_counter()
            if response.status != 200:
                raise HttpStatusError(response.status, await response.text())
            buffer = b""
            first_byte: float | None = None
            content_times: list[float] = []
            events = chars = 0
            done = False
            finish_reason: str | None = None
            async for chunk in response.content.iter_any():
                now = time.perf_counter()
                if first_byte is None:
                    first_byte = now
                buffer += chunk
                if b"\r" in buffer:
                    buffer = buffer.replace(b"\r\n", b"\n")
                while (end := buffer.find(b"\n\n")) >= 0:
                    event, buffer = buffer[:end], buffer[end + 2:]
                    data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
                    if not data:
                        continue  # a comment or keep-alive
                    if data == b"[DONE]":
                        done = True
                        continue
                    events += 1
                    message = _decode(data)
                    if "error" in message:
                        error = message["error"]
                        raise StreamError(f"error event: {error.get('code') if isinstance(error, dict) else error}")
                    for choice in message.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            content_times.append(now)
                            chars += len(text)
                        finish_reason = choice.get("finish_reason") or finish_reason
            ended = time.perf_counter()
        if not done:
            raise StreamError("stream ended without [DONE]")
        if not content_times or first_byte is None:
            raise StreamError("stream without content")
        total = ended - started
        late_from = started + total * (1 - LATE_SHARE)
        gaps = [b - a for a, b in itertools.pairwise(content_times)]
        return StreamSample(
            headers_ms=(headers_at - started) * 1000,
            first_byte_ms=(first_byte - started) * 1000,
            first_content_ms=(content_times[0] - started) * 1000,
            last_content_ms=(content_times[-1] - started) * 1000,
            last_byte_ms=total * 1000,
            events=events,
            content_events=len(content_times),
            content_chars=chars,
            early_share=sum(1 for t in content_times if t < late_from) / len(content_times),
            max_gap_ms=max(gaps, default=0.0) * 1000,
            finish_reason=finish_reason,
        )

    return call


@dataclass
class Phase:
    path: str
    concurrency: int
    requests: int
    run: Run[StreamSample]
    cpu: CpuUse

    def values(self, name: str) -> list[float]:
        return [float(getattr(s, name)) for s in self.run.samples]

    def summary(self) -> dict[str, Any]:
        metrics = ("headers_ms", "first_byte_ms", "first_content_ms", "last_byte_ms", "events",
                   "content_events", "content_chars", "early_share", "max_gap_ms")
        return {
            "path": self.path,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.run.ok,
            "errors": dict(self.run.errors),
            "first_error": self.run.first_error,
            "wall_s": round(self.run.wall_s, 3),
            "streams_per_s": round(self.run.rps, 3),
            **{m: {q: finite(pct(self.values(m), float(q[1:]))) for q in ("p50", "p95", "p99")}
               | {"min": finite(min(self.values(m), default=math.nan)),
                  "max": finite(max(self.values(m), default=math.nan))} for m in metrics},
            "finish_reasons": sorted({s.finish_reason or "" for s in self.run.samples}),
            "cpu": self.cpu.as_dict(self.run.ok),
            "samples": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(s).items()}
                        for s in self.run.samples],
        }


async def measure_path(target: Target, body: dict[str, Any], sequential: int, requests: int, levels: list[int],
                       warmup: int, out: Console) -> tuple[list[Phase], dict[str, Any]]:
    phases: list[Phase] = []
    info: dict[str, Any] = {}
    async with client_session(max(levels)) as http:
        call = stream_call(http, target, body)
        warm = await drive(call, warmup, 2)
        if warm.ok == 0:
            raise SystemExit(f"{target.title}: every warm-up stream failed: {warm.first_error}")
        info["warmup_errors"] = dict(warm.errors)
        await asyncio.sleep(SETTLE_S)
        info["idle_cpu_ms_per_s"] = await idle_cpu(target.processes())
        for concurrency, count in [(1, sequential), *((c, requests) for c in levels if c > 1)]:
            if count <= 0:
                continue
            with out.status(f"{target.title}: {count} streams at {concurrency} concurrent…"):
                idle_rss = rss_bytes(target.processes())
                stop = asyncio.Event()
                sampler = asyncio.create_task(peak_rss(target.processes(), stop))
                before = CpuSnapshot.take(target.processes())
                run = await drive(call, count, concurrency)
                stop.set()
                peak = await sampler
                await asyncio.sleep(SETTLE_S)
                cpu = before.until(CpuSnapshot.take(target.processes()))
            if concurrency > 1:
                # Memory per open stream: what the path's processes grew by while `concurrency`
                # streams were open, divided by them (issue 12).
                grown = sum(peak.values()) - sum(idle_rss.values())
                info.setdefault("memory", {})[str(concurrency)] = {
                    "idle_mib": round(sum(idle_rss.values()) / 2**20, 1),
                    "peak_mib": round(sum(peak.values()) / 2**20, 1),
                    "kib_per_open_stream": round(max(grown, 0) / 1024 / concurrency, 1),
                    "per_process_peak_mib": {k: round(v / 2**20, 1) for k, v in peak.items()},
                }
                out.print(f"  {target.title} @{concurrency}: memory {sum(idle_rss.values()) / 2**20:.0f} MiB idle, "
                          f"{sum(peak.values()) / 2**20:.0f} MiB peak → "
                          f"{max(grown, 0) / 1024 / concurrency:.0f} KiB per open stream")
            phase = Phase(target.key, concurrency, count, run, cpu)
            phases.append(phase)
            errors = f", {sum(run.errors.values())} errors ({run.first_error})" if run.errors else ""
            out.print(f"  {target.title} @{concurrency}: first content p50 "
                      f"{fmt_ms(pct(phase.values('first_content_ms'), 50))} ms, last byte p50 "
                      f"{fmt_ms(pct(phase.values('last_byte_ms'), 50))} ms, "
                      f"{_median(phase.values('content_events')):.0f} content events, "
                      f"early share {_median(phase.values('early_share')):.2f}{errors}")
    return phases, info


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


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
                **{f"added_first_content_{q}_ms": finite(pct(mine.values("first_content_ms"), n)
                                                         - pct(other.values("first_content_ms"), n))
                   for q, n in (("p50", 50), ("p99", 99))},
                **{f"added_last_byte_{q}_ms": finite(pct(mine.values("last_byte_ms"), n)
                                                     - pct(other.values("last_byte_ms"), n))
                   for q, n in (("p50", 50), ("p99", 99))},
                "throughput_ratio": finite(ratio(mine.run.rps, other.run.rps)),
            }
        rows.append(row)
    return rows


def print_report(out: Console, phases: list[Phase], infos: dict[str, Any], title: str) -> None:
    table = Table(title=title, caption="; ".join(f"{SHORT_TITLES[k]}: {v}" for k, v in PATH_TITLES.items())
                  + f". early share: content events received before the last {LATE_SHARE:.0%} of the stream's time")
    for column in ("path", "concurrent", "ok", "errors", "first byte p50", "first content p50", "p95", "p99",
                   "last byte p50", "p99", "events p50", "content events p50", "early share p50", "max gap p50",
                   "streams/s", "CPU ms/stream"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for p in phases:
        first, last = p.values("first_content_ms"), p.values("last_byte_ms")
        served = sum(p.cpu.processes.values()) * 1000 / max(p.run.ok, 1)
        table.add_row(
            SHORT_TITLES[p.path], str(p.concurrency), str(p.run.ok), str(sum(p.run.errors.values())),
            fmt_ms(pct(p.values("first_byte_ms"), 50)), fmt_ms(pct(first, 50)), fmt_ms(pct(first, 95)),
            fmt_ms(pct(first, 99)), fmt_ms(pct(last, 50)), fmt_ms(pct(last, 99)),
            f"{_median(p.values('events')):.0f}", f"{_median(p.values('content_events')):.0f}",
            f"{_median(p.values('early_share')):.2f}", fmt_ms(_median(p.values("max_gap_ms"))),
            f"{p.run.rps:.1f}", f"{served:.1f}",
        )
    out.print(table)

    table = Table(title="Stellwerk against the references (added ms: Stellwerk minus reference)")
    for column in ("concurrent", "vs direct: first content p50", "p99", "last byte p50", "p99", "streams/s ratio",
                   "vs LiteLLM: first content p50", "p99", "last byte p50", "p99", "streams/s ratio"):
        table.add_column(column, justify="right")
    for row in comparisons(phases):
        cells = [str(row["concurrency"])]
        for ref in (DIRECT, LITELLM):
            cmp = row.get(f"vs_{ref}")
            if cmp is None:
                cells += ["–"] * 5
                continue
            for key in ("added_first_content_p50_ms", "added_first_content_p99_ms",
                        "added_last_byte_p50_ms", "added_last_byte_p99_ms"):
                cells.append(fmt_ms(cmp[key] if cmp[key] is not None else math.nan, signed=True))
            tr = cmp["throughput_ratio"]
            cells.append(f"{tr:.2f}×" if tr is not None else "–")
        table.add_row(*cells)
    out.print(table)

    levels = sorted({p.concurrency for p in phases})
    table = Table(title="CPU milliseconds per stream, per process (from /proc/<pid>/stat)")
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
        idle: dict[str, float] = infos.get(path, {}).get("idle_cpu_ms_per_s", {})

        def cell(c: int, pick: Callable[[CpuUse], float | None], mine: dict[int, Phase] = mine) -> str:
            p = mine.get(c)
            value = None if p is None else pick(p.cpu)
            return "–" if p is None or value is None else f"{value * 1000 / max(p.run.ok, 1):.1f}"

        for index, name in enumerate(names):
            table.add_row(SHORT_TITLES[path] if index == 0 else "", name,
                          *(cell(c, lambda u, n=name: u.processes.get(n)) for c in levels),
                          f"{idle.get(name, math.nan):.1f}")
        table.add_row("", "[bold]all processes of this path[/bold]",
                      *(cell(c, lambda u: sum(u.processes.values())) for c in levels), f"{sum(idle.values()):.1f}")
        table.add_row("", CLIENT, *(cell(c, lambda u: u.client) for c in levels), "")
        table.add_row("", "[dim]other load on the machine[/dim]", *(cell(c, lambda u: u.other) for c in levels), "",
                      end_section=True)
    out.print(table)


async def run(args: argparse.Namespace) -> None:
    out = console()
    levels = parse_concurrency(args.concurrency)
    max_tokens: int = args.max_tokens or args.answer_tokens
    options = SimulatorOptions(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, canned_text=answer_text(args.answer_tokens))
    body = {"messages": [{"role": "user", "content": prompt_text(args.prompt_chars)}], "max_tokens": max_tokens}
    tokens = min(args.answer_tokens, max_tokens)
    scenario_info = {
        "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "answer_tokens": args.answer_tokens, "max_tokens": max_tokens,
        "prompt_chars": args.prompt_chars, "sequential_requests": args.sequential_requests,
        "requests": args.requests, "concurrency": levels, "warmup": args.warmup, "scale": args.scale,
        "litellm_version": LITELLM_VERSION, "late_share": LATE_SHARE,
        "model_time_ms": args.ttft_ms + args.itl_ms * max(tokens - 1, 0),
    }
    machine = machine_info()
    out.print(f"scenario: streamed {tokens}-token answers, TTFT {args.ttft_ms:g} ms, {args.itl_ms:g} ms/token "
              f"(≈{scenario_info['model_time_ms']:.0f} ms of model time per stream), {args.prompt_chars}-character "
              f"prompt; load average {machine['loadavg_at_start']} on {machine['cpus']} CPUs")
    phases: list[Phase] = []
    infos: dict[str, Any] = {}
    started = time.perf_counter()
    with workdir(args.keep) as directory:
        async with Scenario(options, directory, args.scale, log=out.print).paths() as targets:
            async for target in targets:
                path_phases, infos[target.key] = await measure_path(
                    target, body, args.sequential_requests, args.requests, levels, args.warmup, out)
                phases += path_phases
    print_report(out, phases, infos, f"Stellwerk streaming — {tokens}-token answers, TTFT {args.ttft_ms:g} ms, "
                                     f"{args.itl_ms:g} ms/token, {machine['cpus']} CPUs")
    out.print(f"total {time.perf_counter() - started:.0f} s; load average now "
              f"{[round(x, 2) for x in os.getloadavg()]} (other users of the machine add noise)")
    write_json(args.json, {
        "bench": "streaming", "scenario": scenario_info, "machine": machine, "paths": infos,
        "phases": [p.summary() for p in phases], "stellwerk_vs_references": comparisons(phases),
    })
    if args.json:
        out.print(f"numbers written to {args.json}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="streams per concurrent phase")
    parser.add_argument("--sequential-requests", type=int, default=5, help="streams sent one at a time")
    parser.add_argument("--concurrency", default="64", help="concurrent phases, comma-separated")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="simulator: time to first token")
    parser.add_argument("--itl-ms", type=float, default=2.0, help="simulator: time per further token")
    parser.add_argument("--answer-tokens", type=int, default=500, help="tokens the simulator streams")
    parser.add_argument("--max-tokens", type=int, default=None, help="max_tokens sent (default: --answer-tokens)")
    parser.add_argument("--prompt-chars", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured streams per path first")
    parser.add_argument("--scale", default=None, help="mesh workers, e.g. dlp=2,inference=2")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this file")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and state in this directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run_async(lambda: run(args))


if __name__ == "__main__":
    main()
