from __future__ import annotations

import asyncio

import httpx

from services.simulator.tokenizer import cl100k
from tests.simulator.helpers import chat_body, metric, simulator_client

VLLM_NAMES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:time_to_first_token_seconds_count",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)


async def test_metrics_count_tokens_and_latencies_after_requests() -> None:
    async with simulator_client(itl_ms=0.01) as client:
        before = (await client.get("/metrics")).text
        plain = (await client.post("/v1/chat/completions", json=chat_body("one two three"))).json()
        streamed = await client.post(
            "/v1/chat/completions",
            json=chat_body("four five", stream=True, stream_options={"include_usage": True}),
        )
        metrics = (await client.get("/metrics")).text
    for name in VLLM_NAMES:
        assert metric(before, name) == 0
    stream_usage = [line for line in streamed.text.split("\n\n") if '"usage"' in line]
    assert len(stream_usage) == 1
    prompt_total = plain["usage"]["prompt_tokens"] + 3 + 3 + 1 + len(cl100k().encode_ordinary("four five"))
    generation_total = plain["usage"]["completion_tokens"] + len(cl100k().encode_ordinary("four five"))
    assert metric(metrics, "vllm:prompt_tokens_total") == prompt_total
    assert metric(metrics, "vllm:generation_tokens_total") == generation_total
    assert metric(metrics, "vllm:e2e_request_latency_seconds_count") == 2
    assert metric(metrics, "vllm:time_to_first_token_seconds_count") == 2
    assert metric(metrics, "vllm:num_requests_running") == 0
    assert metric(metrics, "vllm:num_requests_waiting") == 0
    assert metric(metrics, "vllm:kv_cache_usage_perc") == 0


async def test_apps_in_one_process_keep_separate_metrics() -> None:
    async with simulator_client() as first, simulator_client() as second:
        await first.post("/v1/chat/completions", json=chat_body("hello"))
        assert metric((await first.get("/metrics")).text, "vllm:e2e_request_latency_seconds_count") == 1
        assert metric((await second.get("/metrics")).text, "vllm:e2e_request_latency_seconds_count") == 0


async def wait_for_metric(client: httpx.AsyncClient, name: str, value: float) -> str:
    for _ in range(1000):
        text = (await client.get("/metrics")).text
        if metric(text, name) == value:
            return text
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached {value}")


async def test_requests_beyond_max_num_seqs_wait_and_kv_usage_tracks_the_running_one() -> None:
    content = "hold this request"
    per_request = (3 + 3 + 1 + len(cl100k().encode_ordinary(content))) + len(
        cl100k().encode_ordinary(content)
    )
    # A long TTFT keeps the admitted request busy; the test cancels everything at the end.
    async with simulator_client(max_num_seqs=1, ttft_ms=600_000, kv_capacity_tokens=1000) as client:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(content))),
            asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(content))),
            asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(content, stream=True))),
        ]
        metrics = await wait_for_metric(client, "vllm:num_requests_waiting", 2)
        assert metric(metrics, "vllm:num_requests_running") == 1
        assert metric(metrics, "vllm:kv_cache_usage_perc") == per_request / 1000

        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        metrics = await wait_for_metric(client, "vllm:num_requests_running", 0)
        assert metric(metrics, "vllm:num_requests_waiting") == 0
        assert metric(metrics, "vllm:kv_cache_usage_perc") == 0
        # Abandoned requests are not counted as served.
        assert metric(metrics, "vllm:e2e_request_latency_seconds_count") == 0


async def test_queued_requests_all_complete_once_slots_free_up() -> None:
    async with simulator_client(max_num_seqs=2, ttft_ms=5, itl_ms=0.01) as client:
        bodies = [chat_body(f"request {index}", stream=index % 2 == 0) for index in range(6)]
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))
        metrics = (await client.get("/metrics")).text
    assert [response.status_code for response in responses] == [200] * 6
    assert metric(metrics, "vllm:e2e_request_latency_seconds_count") == 6
    assert metric(metrics, "vllm:num_requests_waiting") == 0
    assert metric(metrics, "vllm:num_requests_running") == 0
