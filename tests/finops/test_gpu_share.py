"""Honest GPU cost: a batched deployment's busy time is shared among the calls it served.

The formula (``GpuClock``) in unit tests, and N concurrent calls through the inference
engine against a real simulator: the GPU-seconds booked add up to the deployment's busy
wall time × its GPUs, not N times that.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from schemas.events import ChatMessage, GenerationParams, RoutingDecision
from services.inference.engine import InferenceEngine
from services.kernel.pricing import GpuClock, gpu_seconds
from services.runtime.settings import DEFAULT_CONFIG, load_config
from stellwerk.supervisor import free_port


def busy_time(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of the intervals (the wall time with at least one call in flight)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def test_overlapping_calls_share_each_second() -> None:
    clock = GpuClock()
    a = clock.start(0.0)  # alone for 1 s, then shared with b for 2 s
    b = clock.start(1.0)
    assert clock.finish(a, 3.0) == pytest.approx(1.0 + 2.0 / 2)
    assert clock.finish(b, 4.0) == pytest.approx(2.0 / 2 + 1.0)  # then alone for 1 s


def test_idle_time_is_charged_to_nobody() -> None:
    clock = GpuClock()
    assert clock.finish(clock.start(0.0), 1.0) == pytest.approx(1.0)
    assert clock.finish(clock.start(5.0), 5.5) == pytest.approx(0.5)  # the 4 idle seconds in between: nobody's


@pytest.mark.parametrize("seed", range(20))
def test_any_overlap_sums_to_the_busy_time(seed: int) -> None:
    rng = random.Random(seed)
    intervals = []
    for _ in range(rng.randint(1, 80)):
        start = rng.uniform(0, 100)
        intervals.append((start, start + rng.expovariate(0.2)))
    events = sorted([(a, 0, i) for i, (a, _) in enumerate(intervals)] + [(b, 1, i) for i, (_, b) in enumerate(intervals)])
    clock, marks, charged = GpuClock(), {}, {}
    for at, kind, i in events:
        if kind == 0:
            marks[i] = clock.start(at)
        else:
            charged[i] = clock.finish(marks[i], at)
    assert sum(charged.values()) == pytest.approx(busy_time(intervals), rel=1e-9)
    assert all(charged[i] <= b - a + 1e-9 for i, (a, b) in enumerate(intervals))


def test_calls_the_deployment_reports_from_other_workers_lower_the_share() -> None:
    # Two workers, each with one call over the same 2 s: each books half, together 2 s once.
    clock = GpuClock()
    mark = clock.start(0.0)
    clock.observe(0.0, 2)
    assert clock.finish(mark, 2.0) == pytest.approx(1.0)
    # a reading older than the TTL no longer counts
    mark = clock.start(10.0)
    assert clock.finish(mark, 11.0) == pytest.approx(1.0)


def test_default_deployment_prices_its_gpus() -> None:
    local = load_config(DEFAULT_CONFIG).deployments_for("local-vllm")[0]
    assert gpu_seconds(local, 1.5) == 1.5 * local.gpu_share


@pytest.fixture
def slow_simulator() -> Iterator[int]:
    """A real simulator whose answers take ~0.2 s, serving all calls at once (batched)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.simulator", "--port", str(port), "--model", "stellwerk-local-llama",
         "--mode", "canned", "--ttft-ms", "100", "--itl-ms", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).raise_for_status()
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)


async def test_concurrent_calls_book_the_busy_time_once(slow_simulator: int) -> None:
    config = load_config(DEFAULT_CONFIG)
    for deployment in config.deployments:
        deployment.api_base = f"http://127.0.0.1:{slow_simulator}/v1"
    engine = InferenceEngine(config)
    local = config.deployments_for("local-vllm")[0]
    decision = RoutingDecision(route="local-vllm", rule_id="test", policy_version="v")
    question = [ChatMessage(role="user", content="Wie hoch ist die Selbstbeteiligung?")]
    n = 64

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(
        engine.run(decision, question, GenerationParams(max_tokens=20), timeout_s=30) for _ in range(n)))
    wall = time.perf_counter() - started

    booked = sum(o.gpu_seconds for o in outcomes)
    per_call_wall = sum(o.latency_ms / 1000 * local.gpu_share for o in outcomes)  # the old formula
    assert all(o.deployment.name == "local-vllm-1" for o in outcomes)
    # Never more than the deployment ran; close to it (the calls overlapped the whole time).
    assert booked <= wall * local.gpu_share
    assert booked >= 0.8 * wall * local.gpu_share
    assert per_call_wall > n / 4 * booked  # the old booking was some tens of times too high
    assert sum(o.cost for o in outcomes) == pytest.approx(
        booked / 3600 * local.gpu_hour_rate, rel=1e-3)
