"""Streaming end to end (issue 12): the answer travels as it is generated, screened.

A mesh whose simulators stream one character per event (``piece_chars: 1``) with a small
inter-token delay, so a value the model emits is split across many chunks. The simulator's
``echo-b64:`` form makes the *model* emit personal data the prompt did not contain in clear.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import openai
import pytest
import pytest_asyncio
import yaml
from nats.aio.client import Client

from stellwerk.supervisor import Mesh
from tests.integration.mesh import audit_events, drain, eventually, running_mesh, write_test_config

API_KEY = "sk-stellwerk-demo"
EMAIL = "erika.mustermann@example.org"
IBAN = "DE89370400440532013000"


@pytest.fixture(scope="module")
def streaming_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("streaming")
    path = write_test_config(root)
    config = yaml.safe_load(path.read_text())
    for simulator in config["simulators"]:
        simulator.update(piece_chars=1, ttft_ms=20, itl_ms=1)
    config["gateway_limits"] = {"max_concurrent_per_key": 256}  # 200 streams on one key
    path.write_text(yaml.safe_dump(config))
    with running_mesh(root, path, extra_env={"STELLWERK_ACK_WAIT_S": "2"}) as mesh:
        yield mesh


@pytest_asyncio.fixture(loop_scope="session")
async def stream_nc(streaming_mesh: Mesh) -> AsyncIterator[Client]:
    connection = await nats.connect(streaming_mesh.url)
    yield connection
    await connection.drain()


def client(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def emitted(text: str) -> str:
    return "echo-b64:" + base64.b64encode(text.encode()).decode()


async def read(mesh: Mesh, prompt: str, **extra: Any) -> tuple[list[str], list[Any]]:
    stream = await client(mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": prompt}], stream=True, **extra
    )
    pieces: list[str] = []
    chunks: list[Any] = []
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return pieces, chunks


async def test_answer_arrives_in_many_events_while_it_is_generated(streaming_mesh: Mesh) -> None:
    text = "Ein Stellwerk stellt Weichen und Signale. " * 20
    started = time.perf_counter()
    stream = await client(streaming_mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[float] = []
    pieces: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - started)
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == text
    assert len(pieces) >= 5, "the answer is relayed in many events, not in one at the end"
    assert arrivals[0] < arrivals[-1], "text arrives over time"
    assert usage is not None and usage.completion_tokens > 0


async def test_email_and_iban_split_into_single_characters_never_reach_the_caller(streaming_mesh: Mesh) -> None:
    answer = f"Bitte an {EMAIL} schreiben und auf {IBAN} überweisen. Danke." + " Gruß vom Stellwerk." * 16
    pieces, _ = await read(streaming_mesh, emitted(answer))
    received = "".join(pieces)
    leaked_email = EMAIL in received or "mustermann@" in received
    leaked_iban = IBAN in received or "0532013000" in received
    assert not leaked_email and not leaked_iban
    assert received.startswith("Bitte an ") and received.endswith("Gruß vom Stellwerk.")
    assert len(pieces) >= 3


async def test_pseudonyms_are_restored_across_chunk_boundaries(streaming_mesh: Mesh) -> None:
    prompt = f"Schreib an {EMAIL} wegen Vorgang 4711."
    pieces, _ = await read(streaming_mesh, prompt, extra_headers={"X-Stellwerk-Pseudonymize": "true"})
    # The model saw a pseudonym and echoed it; the caller gets the original value back.
    restored = EMAIL in "".join(pieces)
    assert restored


async def test_block_mid_stream_ends_with_content_filter_and_an_audit_record(
    streaming_mesh: Mesh, stream_nc: Client
) -> None:
    # A health insurance number with a diagnosis in a chat: the output policy blocks it.
    answer = "Alles klar. " * 10 + f"Die Versicherte {EMAIL} hat Diabetes mellitus Typ 2 (E11.9), bitte melden."
    stream = await client(streaming_mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": emitted(answer)}], stream=True,
        extra_headers={"X-Stellwerk-Data-Sensitivity": "public"},
    )
    finish: list[str] = []
    text: list[str] = []
    with pytest.raises(openai.APIError):
        await drain(stream, finish, text)
    assert finish == ["content_filter"]
    leaked = "mustermann" in "".join(text) or "Diabetes" in "".join(text)
    assert not leaked
    request_id = stream.response.headers["x-stellwerk-request-id"]

    async def blocked() -> bool:
        events = [e for e in await audit_events(stream_nc.jetstream()) if e.request_id == request_id]
        return any(e.stage == "dlp_output" and e.outcome == "block" for e in events)

    assert await eventually(blocked)


async def test_200_concurrent_streams_complete_with_their_own_content(streaming_mesh: Mesh) -> None:
    async def one(i: int) -> bool:
        text = f"Antwort Nummer {i} über Weichen."
        pieces, _ = await read(streaming_mesh, text)
        return "".join(pieces) == text

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert all(results)


async def test_a_caller_that_goes_away_stops_the_model_call(streaming_mesh: Mesh, stream_nc: Client) -> None:
    local = next(s for s in streaming_mesh.config.simulators if s.name == "local-vllm")
    text = "Eine lange Antwort über Stellwerke und Signale. " * 40  # ~2,000 characters at 20 ms: ~40 s
    async with httpx.AsyncClient(timeout=60) as http:
        await http.post(f"http://127.0.0.1:{local.port}/admin/faults", json={"itl_ms": 20})
        try:
            async with http.stream(
                "POST", streaming_mesh.gateway_url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={"model": "stellwerk", "stream": True, "messages": [{"role": "user", "content": text}]},
            ) as response:
                request_id = response.headers["x-stellwerk-request-id"]
                async for line in response.aiter_lines():
                    if '"content": "' in line and '"content": ""' not in line:
                        break  # read one piece of text, then hang up
        finally:
            await http.post(f"http://127.0.0.1:{local.port}/admin/faults", json={"itl_ms": 1})

    async def stopped() -> bool:
        events = [e for e in await audit_events(stream_nc.jetstream()) if e.request_id == request_id]
        return any(e.stage == "inference" and e.reason_code == "client_disconnected" for e in events)

    # Recorded long before the ~40 s the model would have needed: the call was stopped.
    assert await eventually(stopped, timeout_s=20)


async def test_killed_output_screening_ends_the_stream_with_a_typed_error(streaming_mesh: Mesh) -> None:
    local = next(s for s in streaming_mesh.config.simulators if s.name == "local-vllm")
    text = "Langsame Antwort über Stellwerke. " * 20  # ~600 characters at 30 ms each: ~18 s
    async with httpx.AsyncClient(timeout=60) as http:
        await http.post(f"http://127.0.0.1:{local.port}/admin/faults", json={"itl_ms": 30})
        try:
            async with http.stream(
                "POST", streaming_mesh.gateway_url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={"model": "stellwerk", "stream": True, "messages": [{"role": "user", "content": text}]},
            ) as response:
                assert response.status_code == 200
                lines: list[str] = []
                killed = False
                async for line in response.aiter_lines():
                    lines.append(line)
                    if not killed and line.startswith("data:") and '"content"' in line and len(lines) > 10:
                        dlp = next(p for p in streaming_mesh.parts if p.name.startswith("dlp-"))
                        dlp.signal(signal.SIGKILL)
                        killed = True
        finally:
            await http.post(f"http://127.0.0.1:{local.port}/admin/faults", json={"itl_ms": 1})
    assert killed
    assert any('"code": "stream_interrupted"' in line for line in lines)
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
