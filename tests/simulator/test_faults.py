from __future__ import annotations

import asyncio

import pytest

from tests.simulator.helpers import chat_body, metric, simulator_client


def assert_openai_error(body: dict[str, dict[str, object]]) -> None:
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_429_has_retry_after_and_openai_error_body() -> None:
    async with simulator_client(rate_429=1.0, retry_after_s=7) as client:
        response = await client.post("/v1/chat/completions", json=chat_body("hi"))
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert_openai_error(response.json())
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert metric(metrics, "simulator:injected_faults_total", fault="429") == 1
    # A rejected request never reached the model.
    assert metric(metrics, "vllm:prompt_tokens_total") == 0


async def test_500_is_openai_shaped() -> None:
    async with simulator_client(rate_500=1.0) as client:
        response = await client.post("/v1/chat/completions", json=chat_body("hi", stream=True))
    assert response.status_code == 500
    assert_openai_error(response.json())
    assert response.json()["error"]["type"] == "server_error"


async def test_timeout_hangs_then_answers_504() -> None:
    async with simulator_client(rate_timeout=1.0, timeout_s=60) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post("/v1/chat/completions", json=chat_body("hi")), 0.2)
        await client.post("/admin/faults", json={"timeout_s": 0.01})
        response = await client.post("/v1/chat/completions", json=chat_body("hi"))
    assert response.status_code == 504
    assert_openai_error(response.json())


async def statuses(seed: int, count: int) -> list[int]:
    async with simulator_client(rate_429=0.3, rate_500=0.3, seed=seed) as client:
        return [
            (await client.post("/v1/chat/completions", json=chat_body("hi"))).status_code
            for _ in range(count)
        ]


async def test_seeded_faults_are_reproducible() -> None:
    first = await statuses(seed=42, count=40)
    assert first == await statuses(seed=42, count=40)
    assert {200, 429, 500} <= set(first)


async def test_admin_faults_updates_partially_and_changes_behaviour() -> None:
    async with simulator_client(ttft_ms=0.5, seed=1) as client:
        assert (await client.post("/v1/chat/completions", json=chat_body("hi"))).status_code == 200

        updated = await client.post("/admin/faults", json={"rate_500": 1.0})
        assert updated.status_code == 200
        config = updated.json()
        assert config["rate_500"] == 1.0
        assert config["ttft_ms"] == 0.5  # untouched fields keep their values
        assert config["rate_429"] == 0.0
        assert (await client.post("/v1/chat/completions", json=chat_body("hi"))).status_code == 500

        invalid = await client.post("/admin/faults", json={"rate_429": 0.5})  # 0.5 + 1.0 > 1
        assert invalid.status_code == 422
        assert (await client.get("/admin/faults")).json() == config

        switched = await client.post("/admin/faults", json={"rate_500": 0.0, "rate_429": 1.0, "itl_ms": 0})
        assert switched.json()["itl_ms"] == 0
        assert (await client.post("/v1/chat/completions", json=chat_body("hi"))).status_code == 429

        await client.post("/admin/faults", json={"rate_429": 0.0})
        assert (await client.post("/v1/chat/completions", json=chat_body("hi"))).status_code == 200


async def test_admin_seed_restarts_the_fault_sequence() -> None:
    async with simulator_client(rate_429=0.5) as client:
        runs = []
        for _ in range(2):
            await client.post("/admin/faults", json={"seed": 3})
            runs.append(
                [
                    (await client.post("/v1/chat/completions", json=chat_body("x"))).status_code
                    for _ in range(20)
                ]
            )
    assert runs[0] == runs[1]
    assert {200, 429} == set(runs[0])
