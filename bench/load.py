"""Load generation shared by the benchmarks: timed calls from N concurrent callers."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable


async def measure(call: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> tuple[list[float], float]:
    """Per-call latencies (ms) and sustained calls/s with ``concurrency`` callers."""
    latencies: list[float] = []
    queue = iter(range(requests))

    async def caller() -> None:
        for _ in queue:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, requests / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
