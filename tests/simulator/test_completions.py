from __future__ import annotations

import json
from typing import Any

from services.simulator.generation import stream_pieces
from services.simulator.tokenizer import cl100k
from tests.simulator.helpers import MODEL, chat_body, simulator_client, sse_events

PROMPT = "Grüße aus Köln — please summarise: the quick brown fox 🦊 jumps over the lazy dog."


def expected_prompt_tokens(messages: list[dict[str, str]]) -> int:
    encode = cl100k().encode_ordinary
    total = 3
    for message in messages:
        total += 3 + len(encode(message["role"])) + len(encode(message["content"]))
        if "name" in message:
            total += 1 + len(encode(message["name"]))
    return total


async def test_echo_completion_is_openai_shaped_with_real_token_counts() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question", "name": "alice"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": PROMPT},
    ]
    async with simulator_client() as client:
        response = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": PROMPT}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == expected_prompt_tokens(messages)
    assert usage["completion_tokens"] == len(cl100k().encode_ordinary(PROMPT))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_canned_mode_answers_the_fixed_text() -> None:
    async with simulator_client(mode="canned", canned_text="Fixed answer.") as client:
        body = (await client.post("/v1/chat/completions", json=chat_body("anything"))).json()
    assert body["choices"][0]["message"]["content"] == "Fixed answer."
    assert body["usage"]["completion_tokens"] == len(cl100k().encode_ordinary("Fixed answer."))


async def test_max_tokens_truncates_with_finish_reason_length() -> None:
    tokens = cl100k().encode_ordinary(PROMPT)
    async with simulator_client() as client:
        cut = (await client.post("/v1/chat/completions", json=chat_body(PROMPT, max_tokens=4))).json()
        newer = (
            await client.post("/v1/chat/completions", json=chat_body(PROMPT, max_completion_tokens=4))
        ).json()
        exact = (
            await client.post("/v1/chat/completions", json=chat_body(PROMPT, max_tokens=len(tokens)))
        ).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 4
    assert cut["choices"][0]["message"]["content"] == cl100k().decode(tokens[:4])
    assert newer["choices"][0] == cut["choices"][0]
    assert exact["choices"][0]["finish_reason"] == "stop"
    assert exact["choices"][0]["message"]["content"] == PROMPT


def reassemble(body: str) -> tuple[str, list[dict[str, Any]], str | None]:
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = ""
    finish_reason = None
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            finish_reason = choice["finish_reason"] or finish_reason
    return text, chunks, finish_reason


async def test_stream_reassembles_to_the_plain_answer() -> None:
    async with simulator_client() as client:
        plain = (await client.post("/v1/chat/completions", json=chat_body(PROMPT))).json()
        streamed = await client.post("/v1/chat/completions", json=chat_body(PROMPT, stream=True))
    assert streamed.headers["content-type"].startswith("text/event-stream")
    text, chunks, finish_reason = reassemble(streamed.text)
    assert text == plain["choices"][0]["message"]["content"]
    assert finish_reason == "stop"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all("usage" not in chunk for chunk in chunks)


async def test_paced_stream_sends_one_chunk_per_token_and_usage_last() -> None:
    tokens = cl100k().encode_ordinary(PROMPT)
    async with simulator_client(itl_ms=0.01) as client:
        streamed = await client.post(
            "/v1/chat/completions",
            json=chat_body(PROMPT, stream=True, stream_options={"include_usage": True}, max_tokens=9),
        )
    text, chunks, finish_reason = reassemble(streamed.text)
    assert text == cl100k().decode(tokens[:9])
    assert finish_reason == "length"
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    # A token ending inside a multi-byte character is carried by the next chunk.
    assert len(content_chunks) == sum(1 for piece in stream_pieces(cl100k(), tokens[:9]) if piece)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 9
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 9


def test_stream_pieces_survive_cuts_inside_characters() -> None:
    encoding = cl100k()
    text = "🦊🎉 Grüße"
    tokens = encoding.encode_ordinary(text)
    for cut in range(len(tokens) + 1):
        assert "".join(stream_pieces(encoding, tokens[:cut])) == encoding.decode(tokens[:cut])


async def test_models_and_health() -> None:
    async with simulator_client(name="local-vllm") as client:
        models = (await client.get("/v1/models")).json()
        health = await client.get("/health")
    assert models["object"] == "list"
    assert [entry["id"] for entry in models["data"]] == [MODEL]
    assert health.status_code == 200
    assert health.json()["name"] == "local-vllm"


async def test_every_served_model_answers_under_its_own_id() -> None:
    async with simulator_client(served_models=["gpt-4o"], embedding_models=["embed"]) as client:
        models = (await client.get("/v1/models")).json()
        plain = (
            await client.post("/v1/chat/completions", json={**chat_body("hi"), "model": "gpt-4o"})
        ).json()
        streamed = await client.post(
            "/v1/chat/completions", json={**chat_body("hi", stream=True), "model": "gpt-4o"}
        )
    assert [entry["id"] for entry in models["data"]] == [MODEL, "gpt-4o", "embed"]
    assert plain["model"] == "gpt-4o"
    _, chunks, _ = reassemble(streamed.text)
    assert {chunk["model"] for chunk in chunks} == {"gpt-4o"}


async def test_request_errors_are_openai_shaped() -> None:
    async with simulator_client(max_model_len=64) as client:
        unknown = await client.post("/v1/chat/completions", json={**chat_body("hi"), "model": "gpt-x"})
        broken = await client.post("/v1/chat/completions", content=b"{not json")
        empty = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
        too_long = await client.post("/v1/chat/completions", json=chat_body("word " * 100))
        zero = await client.post("/v1/chat/completions", json=chat_body("hi", max_tokens=0))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    for response in (broken, empty, too_long, zero):
        assert response.status_code == 400
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
