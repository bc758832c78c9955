"""The real ``python -m services.simulator`` process, driven by the official openai client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from services.simulator.tokenizer import cl100k
from stellwerk.supervisor import free_port
from tests.simulator.helpers import MODEL, metric

PROJECT_ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Wie hoch ist das Budget für Q3? Answer in one sentence, please."


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "services.simulator",
        "--name", "local-vllm", "--host", "127.0.0.1", "--port", str(port),
        "--model", MODEL, "--ttft-ms", "0", "--itl-ms", "0", "--mode", "echo", "--seed", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "simulator did not become healthy"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    # log level warning and no access log: a clean run prints nothing.
    assert b"Traceback" not in stderr


@pytest.fixture
def client(simulator_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{simulator_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_plain_completion_with_openai_client(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == QUESTION
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(cl100k().encode_ordinary(QUESTION))
    assert completion.usage.prompt_tokens == 3 + 3 + 1 + len(cl100k().encode_ordinary(QUESTION))
    assert [model.id for model in client.models.list()] == [MODEL]


def test_streaming_completion_with_openai_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=6,
    )
    text = ""
    finish_reasons = []
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        usage = chunk.usage or usage
    tokens = cl100k().encode_ordinary(QUESTION)
    assert text == cl100k().decode(tokens[:6])
    assert finish_reasons == ["length"]
    assert usage is not None
    assert usage.completion_tokens == 6


def test_injected_faults_surface_as_openai_errors(client: openai.OpenAI, simulator_url: str) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    try:
        httpx.post(
            f"{simulator_url}/admin/faults", json={"rate_429": 1.0, "retry_after_s": 2}
        ).raise_for_status()
        with pytest.raises(openai.RateLimitError) as rate_limited:
            client.chat.completions.create(model=MODEL, messages=messages)
        assert rate_limited.value.response.headers["retry-after"] == "2"
        assert rate_limited.value.code == "rate_limit_exceeded"

        httpx.post(
            f"{simulator_url}/admin/faults", json={"rate_429": 0.0, "rate_500": 1.0}
        ).raise_for_status()
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=messages)

        httpx.post(
            f"{simulator_url}/admin/faults", json={"rate_500": 0.0, "rate_timeout": 1.0, "timeout_s": 30}
        ).raise_for_status()
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.3).chat.completions.create(model=MODEL, messages=messages)
    finally:
        httpx.post(
            f"{simulator_url}/admin/faults", json={"rate_429": 0.0, "rate_500": 0.0, "rate_timeout": 0.0}
        ).raise_for_status()
    assert client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content == "hi"


def test_metrics_endpoint_over_http(simulator_url: str, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    text = httpx.get(f"{simulator_url}/metrics").text
    assert metric(text, "vllm:generation_tokens_total") >= len(cl100k().encode_ordinary("count me"))
    assert metric(text, "vllm:num_requests_running") == 0
    assert metric(text, "simulator:injected_faults_total", fault="429") >= 0
