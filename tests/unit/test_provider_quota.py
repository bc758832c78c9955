"""Provider quotas: the simulator's rate-limit headers, read by inference, steer the router."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

from schemas.events import ChatMessage, GenerationParams, RoutingDecision
from schemas.kv import QuotaState
from services.inference.engine import InferenceEngine
from services.router.signals import UNLIMITED, SignalBoard
from services.runtime.settings import DEFAULT_CONFIG, load_config
from services.simulator.quota import TokenQuota
from stellwerk.supervisor import free_port


def test_token_quota_counts_per_minute() -> None:
    now = [120.0]
    quota = TokenQuota(100, clock=lambda: now[0])
    assert quota.charge(30)["x-ratelimit-remaining-tokens"] == "70"
    assert quota.charge(90)["x-ratelimit-remaining-tokens"] == "0"
    now[0] = 180.0  # the next minute starts afresh
    assert quota.charge(10) == {"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "90"}


@pytest.fixture
def api_simulator() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.simulator", "--port", str(port), "--model", "stellwerk-gpt52",
         "--tokens-per-minute", "500"],
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


async def test_inference_reads_the_providers_quota_headers(api_simulator: int) -> None:
    config = load_config(DEFAULT_CONFIG)
    for deployment in config.deployments:
        deployment.api_base = f"http://127.0.0.1:{api_simulator}/v1"
    engine = InferenceEngine(config)
    decision = RoutingDecision(route="api-gpt52", rule_id="quality.high", policy_version="v")
    outcome = await engine.run(decision, [ChatMessage(role="user", content="Wie hoch ist die Selbstbeteiligung?")],
                               GenerationParams(), timeout_s=10)
    assert outcome.provider_quota is not None
    assert outcome.provider_quota.limit == 500
    assert outcome.provider_quota.remaining == 500 - outcome.prompt_tokens - outcome.completion_tokens


def test_router_uses_the_reported_limit_when_the_config_states_none() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert not any(d.tokens_per_minute for d in config.deployments_for("api-gpt52"))
    board = SignalBoard(config)
    now = datetime.now(UTC)
    assert board.signals_for("t", "b", "chat", now).api_quota_remaining == UNLIMITED
    window = int(now.timestamp() // 60)
    board.apply_capacity("quota.api-gpt52", msgspec.json.encode(
        QuotaState(route="api-gpt52", limit=500, used=480, window=window)))
    assert board.signals_for("t", "b", "chat", now).api_quota_remaining == 20
    board.apply_capacity("quota.api-gpt52", msgspec.json.encode(
        QuotaState(route="api-gpt52", limit=500, used=900, window=window)))
    assert board.signals_for("t", "b", "chat", now).api_quota_remaining == 0
