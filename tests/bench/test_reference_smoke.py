"""Smoke tests of the benchmark harness (bench/reference.py, harness.py, pipeline.py,
streaming.py): the pieces a benchmark run relies on, against a real simulator process, with
no timing asserted. Starting LiteLLM Proxy takes 20-30 s on two cores, so that round trip
runs only when asked for (``STELLWERK_BENCH_PROXY=1``) and its virtual environment exists
(``uv run python bench/reference.py --install-only``); nothing here needs the network."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.harness import (
    HttpStatusError,
    answer_text,
    client_session,
    cpu_seconds,
    direct_target,
    drive,
    prompt_text,
)
from bench.pipeline import chat_call
from bench.reference import (
    LITELLM_VENV,
    MASTER_KEY,
    SimulatorOptions,
    proxy_config,
    running_litellm_proxy,
    running_simulator,
)
from bench.streaming import stream_call
from services.simulator.tokenizer import cl100k


def test_prompt_and_answer_have_the_asked_size() -> None:
    assert len(prompt_text(200)) == 200
    for tokens in (1, 40, 500):
        assert len(cl100k().encode_ordinary(answer_text(tokens))) == tokens


def test_proxy_config_is_routing_and_auth_only() -> None:
    config = proxy_config("http://127.0.0.1:9/v1", "m")
    assert config["model_list"] == [{
        "model_name": "m",
        "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-unused"},
    }]
    assert config["general_settings"] == {"master_key": MASTER_KEY}
    assert config["litellm_settings"]["telemetry"] is False
    assert not {"guardrails", "callbacks", "success_callback"} & set(config["litellm_settings"])


def test_cpu_seconds_include_live_descendants() -> None:
    # the child only waits; its child (a live descendant) burns CPU, then waits too
    burn = "sum(range(20_000_000)); print('done', flush=True); input()"
    spawn = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {burn!r}]); input()"
    process = subprocess.Popen([sys.executable, "-c", spawn], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"done"
        assert cpu_seconds({"tree": process.pid})["tree"] >= 0.1
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def test_chat_and_stream_calls_against_the_simulator(tmp_path: Path) -> None:
    options = SimulatorOptions(ttft_ms=5, itl_ms=1, canned_text=answer_text(60))
    body = {"messages": [{"role": "user", "content": prompt_text(200)}], "max_tokens": 60}
    async with running_simulator(options, tmp_path) as sim, client_session(4) as http:
        target = direct_target(sim)
        chats = await drive(chat_call(http, target, body), 6, 3)
        assert chats.ok == 6 and not chats.errors
        assert chats.samples[0]["usage"]["completion_tokens"] == 60

        streams = await drive(stream_call(http, target, body), 3, 3)
        assert streams.ok == 3 and not streams.errors
        sample = streams.samples[0]
        assert sample.content_events == 60 and sample.events == 62  # role+text, 59 more, finish
        assert sample.first_content_ms <= sample.last_byte_ms and sample.finish_reason == "stop"
        assert 0 < sample.early_share <= 1

        # failures are counted by kind, not raised
        wrong = dataclasses.replace(target, model="no-such-model")
        failed = await drive(chat_call(http, wrong, body), 2, 1)
        assert failed.ok == 0 and failed.errors == {"HTTP 404": 2}
        assert cpu_seconds(target.processes())["simulator"] > 0


@pytest.mark.skipif(os.environ.get("STELLWERK_BENCH_PROXY") != "1" or not (LITELLM_VENV / "bin" / "litellm").exists(),
                    reason="set STELLWERK_BENCH_PROXY=1 with the proxy's venv installed (bench/reference.py --install-only)")
async def test_litellm_proxy_round_trip(tmp_path: Path) -> None:
    options = SimulatorOptions(canned_text=answer_text(20))
    body = {"messages": [{"role": "user", "content": "hallo"}], "max_tokens": 20}
    async with running_simulator(options, tmp_path) as sim:
        async with running_litellm_proxy(sim.base_url, sim.model, log_dir=tmp_path) as proxy:
            pid = proxy.process.pid
            async with aiohttp.ClientSession() as http:
                url = proxy.base_url + "/chat/completions"
                async with http.post(url, json={**body, "model": sim.model}, headers=proxy.headers) as response:
                    assert response.status == 200
                    assert (await response.json())["usage"]["completion_tokens"] == 20
                async with http.post(url, json={**body, "model": sim.model}) as response:
                    assert response.status >= 400  # refused without the master key (LiteLLM says 500)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_http_status_error_names_the_status() -> None:
    assert str(HttpStatusError(503, "busy")).startswith("HTTP 503")
