"""Tools, structured output, ``n``, stop and embeddings, driven by the official openai SDK
against an in-process simulator (ASGI transport, no sockets)."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest

from services.simulator import SimulatorSettings, create_app
from services.simulator.structured import instance
from services.simulator.tokenizer import cl100k
from tests.simulator.helpers import MODEL, chat_body, simulator_client, sse_events

EMBEDDER = "sim-embed"
OTHER_CHAT = "gpt-4o-mini"

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
SEND_MAIL: Any = {
    "type": "function",
    "function": {
        "name": "send_mail",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {"type": "string"},
                "urgent": {"type": "boolean"},
                "priority": {"type": "string", "enum": ["low", "high"]},
                "cc": {"type": "array", "items": {"type": "string"}},
                "meta": {"type": "object", "properties": {"score": {"type": "number"}}},
            },
            "required": ["to", "urgent"],
        },
    },
}
# The SDK's stream helper parses arguments only of strict tools (all properties required).
STRICT_LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "lookup_claim",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"claim_id": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["claim_id", "limit"],
            "additionalProperties": False,
        },
    },
}
NO_PARAMS: Any = {"type": "function", "function": {"name": "ping"}}
CLAIM_SCHEMA: Any = {
    "type": "object",
    "properties": {
        "claim_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 10},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "opened": {"type": "string", "format": "date"},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
    },
    "required": ["claim_id", "amount", "items", "status", "opened", "note"],
    "additionalProperties": False,
    "$defs": {
        "item": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["name", "count"],
            "additionalProperties": False,
        }
    },
}
CLAIM_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "claim", "schema": CLAIM_SCHEMA, "strict": True},
}


@asynccontextmanager
async def sdk(**overrides: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    settings = {"served_models": [OTHER_CHAT], "embedding_models": [EMBEDDER], "embedding_dims": 64}
    app = create_app(SimulatorSettings(**{**settings, **overrides}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator/v1") as http:
        yield openai.AsyncOpenAI(
            base_url="http://simulator/v1", api_key="sk-test", http_client=http, max_retries=0
        )


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_named_tool_choice_always_calls_that_tool() -> None:
    async with sdk() as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=user("Wie ist das Wetter in Köln?"),
            tools=[WEATHER, SEND_MAIL],
            tool_choice={"type": "function", "function": {"name": "send_mail"}},
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "send_mail"
    arguments = json.loads(call.function.arguments)
    assert arguments == {
        "to": "Wie ist das Wetter in Köln?",
        "urgent": True,
        "priority": "low",
        "cc": ["Wie ist das Wetter in Köln?"],
        "meta": {"score": 1.0},
    }
    assert jsonschema_rs.is_valid(SEND_MAIL["function"]["parameters"], arguments)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(cl100k().encode_ordinary(call.function.arguments))


async def test_auto_calls_every_named_tool_in_parallel_unless_told_not_to() -> None:
    prompt = "get_weather für Bonn, dann send_mail an das Team"
    async with sdk() as client:
        parallel = await client.chat.completions.create(
            model=MODEL, messages=user(prompt), tools=[WEATHER, SEND_MAIL, NO_PARAMS]
        )
        single = await client.chat.completions.create(
            model=MODEL, messages=user(prompt), tools=[WEATHER, SEND_MAIL], parallel_tool_calls=False
        )
        unnamed = await client.chat.completions.create(
            model=MODEL, messages=user("Hallo"), tools=[WEATHER, SEND_MAIL], tool_choice="auto"
        )
        none = await client.chat.completions.create(
            model=MODEL, messages=user(prompt), tools=[WEATHER], tool_choice="none"
        )
        required = await client.chat.completions.create(
            model=MODEL, messages=user("Hallo"), tools=[NO_PARAMS, WEATHER], tool_choice="required"
        )
    calls = parallel.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "send_mail"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2
    assert [c.function.name for c in single.choices[0].message.tool_calls or []] == ["get_weather"]  # type: ignore[union-attr]
    for text_answer, expected in ((unnamed, "Hallo"), (none, prompt)):
        assert text_answer.choices[0].finish_reason == "stop"
        assert text_answer.choices[0].message.tool_calls is None
        assert text_answer.choices[0].message.content == expected
    forced = required.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in forced] == [("ping", "{}")]  # type: ignore[union-attr]


async def test_tool_result_round_trip_answers_with_text_and_counts_history_tokens() -> None:
    async with sdk() as client:
        messages: list[Any] = user("get_weather in Köln?")
        first = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
        call = (first.choices[0].message.tool_calls or [])[0]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "12 Grad, Regen"},
        ]
        second = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required"
        )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool result: 12 Grad, Regen"
    encode = cl100k().encode_ordinary
    assert first.usage is not None and second.usage is not None
    history = (
        3 + len(encode("assistant")) + len(encode(call.function.name + call.function.arguments))  # type: ignore[union-attr]
        + 3 + len(encode("tool")) + len(encode("12 Grad, Regen"))
    )  # fmt: skip
    assert second.usage.prompt_tokens == first.usage.prompt_tokens + history


async def test_echo_b64_reaches_tool_arguments() -> None:
    hidden = "erika@example.org"
    prompt = "echo-b64:" + base64.b64encode(f"Mail an {hidden}".encode()).decode()
    async with sdk() as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=user(prompt),
            tools=[SEND_MAIL],
            tool_choice={"type": "function", "function": {"name": "send_mail"}},
        )
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert json.loads(call.function.arguments)["to"] == f"Mail an {hidden}"  # type: ignore[union-attr]


async def test_streamed_tool_calls_reassemble_in_the_sdk_stream_helper() -> None:
    prompt = "lookup_claim für 4711 und Ümläute 🦊"
    async with sdk(itl_ms=0.01) as client:
        plain = await client.chat.completions.create(
            model=MODEL, messages=user(prompt), tools=[STRICT_LOOKUP]
        )
        async with client.chat.completions.stream(
            model=MODEL,
            messages=user(prompt),
            tools=[STRICT_LOOKUP],
            stream_options={"include_usage": True},
        ) as stream:
            deltas = [event async for event in stream if event.type == "tool_calls.function.arguments.delta"]
            final = await stream.get_final_completion()
    assert len(deltas) > 2
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    streamed = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.parsed_arguments == {"claim_id": prompt, "limit": 1}
    expected = [(c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    assert streamed == expected
    assert final.usage is not None and plain.usage is not None
    assert final.usage.completion_tokens == plain.usage.completion_tokens


async def test_streamed_tool_call_deltas_have_openais_shape() -> None:
    prompt = "get_weather, ping"
    async with simulator_client(piece_chars=2) as client:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(prompt, stream=True, tools=[WEATHER, NO_PARAMS]),
        )
    chunks = [json.loads(event) for event in sse_events(response.text)[:-1]]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0]["role"] == "assistant" and deltas[0]["content"] is None
    headers = [d["tool_calls"][0] for d in deltas if d and "id" in d["tool_calls"][0]]
    assert [(h["index"], h["type"], h["function"]) for h in headers] == [
        (0, "function", {"name": "get_weather", "arguments": ""}),
        (1, "function", {"name": "ping", "arguments": ""}),
    ]
    pieces = [d["tool_calls"][0] for d in deltas if d and "id" not in d["tool_calls"][0]]
    assert all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in pieces)
    assert all(len(p["function"]["arguments"]) <= 2 for p in pieces)
    arguments = ["".join(p["function"]["arguments"] for p in pieces if p["index"] == i) for i in (0, 1)]
    assert [json.loads(a) for a in arguments] == [{"city": prompt, "days": 1}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_json_schema_answer_validates_and_streams_the_same_document() -> None:
    async with sdk() as client:
        completion = await client.chat.completions.create(
            model=MODEL, messages=user("Erfasse den Schaden als JSON."), response_format=CLAIM_FORMAT
        )
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=user("Erfasse den Schaden als JSON."),
            response_format=CLAIM_FORMAT,
            stream=True,
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        json_object = await client.chat.completions.create(
            model=MODEL, messages=user("Antwort als JSON"), response_format={"type": "json_object"}
        )
    text = completion.choices[0].message.content or ""
    document = json.loads(text)
    assert jsonschema_rs.is_valid(CLAIM_SCHEMA, document)
    assert document["claim_id"] == "Erfasse den Schaden als JSON."
    assert len(document["items"]) == 2 and document["amount"] == 10.0
    assert streamed == text
    assert json.loads(json_object.choices[0].message.content or "") == {"answer": "Antwort als JSON"}


def test_instance_covers_the_schema_keywords() -> None:
    schema: Any = {
        "type": "object",
        "properties": {
            "n": {"type": ["integer", "null"], "exclusiveMinimum": 5, "maximum": 9},
            "flag": {"type": "boolean"},
            "kind": {"const": "claim"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 3}},
            "both": {"allOf": [{"properties": {"a": {"type": "integer"}}}, {"required": ["b"]}]},
            "node": {"$ref": "#"},
        },
    }
    document = instance(schema, "x")
    assert jsonschema_rs.is_valid(schema, document)
    assert document["n"] == 6 and document["kind"] == "claim" and document["tags"] == ["x.."]
    assert instance(None, "x") == "x"


async def test_invalid_json_markers() -> None:
    async with sdk() as client:
        first = await client.chat.completions.create(
            model=MODEL,
            messages=user("Schaden als JSON [sim:invalid-json]"),
            response_format=CLAIM_FORMAT,
        )
        broken = first.choices[0].message.content or ""
        reask: list[Any] = [
            *user("Schaden als JSON [sim:invalid-json]"),
            {"role": "assistant", "content": broken},
            *user("That was not valid JSON; answer again."),
        ]
        second = await client.chat.completions.create(
            model=MODEL, messages=reask, response_format=CLAIM_FORMAT
        )
        always = await client.chat.completions.create(
            model=MODEL,
            messages=[*user("JSON [sim:invalid-json-always]"), *reask[1:]],
            response_format={"type": "json_object"},
        )
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    assert jsonschema_rs.is_valid(CLAIM_SCHEMA, json.loads(second.choices[0].message.content or ""))
    with pytest.raises(json.JSONDecodeError):
        json.loads(always.choices[0].message.content or "")


async def test_n_choices_and_sampling_fields() -> None:
    prompt = "Zwei Antworten bitte"
    async with sdk() as client:
        completion = await client.chat.completions.create(
            model=OTHER_CHAT,
            messages=user(prompt),
            n=2,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=0.1,
            logit_bias={"50256": -100},
            user="hashed-user",
            max_completion_tokens=50,
            temperature=0.2,
        )
        stream = await client.chat.completions.create(
            model=MODEL, messages=user(prompt), n=2, stream=True, stream_options={"include_usage": True}
        )
        texts = {0: "", 1: ""}
        finishes: dict[int, str] = {}
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
    assert completion.model == OTHER_CHAT
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == prompt for c in completion.choices)
    answer_tokens = len(cl100k().encode_ordinary(prompt))
    assert completion.usage is not None and completion.usage.completion_tokens == 2 * answer_tokens
    assert texts == {0: prompt, 1: prompt} and finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 2 * answer_tokens


async def test_stop_cuts_the_answer() -> None:
    async with sdk() as client:
        cut = await client.chat.completions.create(
            model=MODEL, messages=user("one. two. three."), stop=[" three", ". two"]
        )
        absent = await client.chat.completions.create(model=MODEL, messages=user("one. two."), stop="zzz")
    assert cut.choices[0].message.content == "one"
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage is not None and cut.usage.completion_tokens == len(cl100k().encode_ordinary("one"))
    assert absent.choices[0].message.content == "one. two."


async def test_invalid_new_fields_are_refused_like_openai() -> None:
    async with simulator_client(embedding_models=[EMBEDDER]) as client:
        for extra in (
            {"n": 0},
            {"presence_penalty": 3},
            {"tool_choice": "required"},
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            {"response_format": {"type": "yaml"}},
            {"stop": ["a", "b", "c", "d", "e"]},
        ):
            response = await client.post("/v1/chat/completions", json=chat_body("hi", **extra))
            assert response.status_code == 400, extra
            assert response.json()["error"]["type"] == "invalid_request_error"
        embedder = await client.post("/v1/chat/completions", json={**chat_body("hi"), "model": EMBEDDER})
    assert embedder.status_code == 404
    assert embedder.json()["error"]["param"] == "model"


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_embeddings_float_base64_dimensions_and_lists() -> None:
    texts = ["Wasserschaden im Keller", "Sturmschaden"]
    async with sdk() as client:
        single = await client.embeddings.create(model=EMBEDDER, input=texts[0])
        again = await client.embeddings.create(model=EMBEDDER, input=texts[0])
        batch = await client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="base64")
        short = await client.embeddings.create(model=EMBEDDER, input=texts[0], dimensions=8)
        tokens = await client.embeddings.create(model=EMBEDDER, input=[[1, 2, 3], [4]])
    vector = single.data[0].embedding
    assert single.object == "list" and single.model == EMBEDDER
    assert single.data[0].object == "embedding" and len(vector) == 64
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert again.data[0].embedding == vector
    assert [d.index for d in batch.data] == [0, 1]
    # The SDK hands base64 through untouched when asked for it explicitly.
    decoded = [floats(d.embedding) for d in batch.data]  # type: ignore[arg-type]
    assert decoded[0] == vector
    assert decoded[1] != vector
    encode = cl100k().encode_ordinary
    assert single.usage.prompt_tokens == single.usage.total_tokens == len(encode(texts[0]))
    assert batch.usage.prompt_tokens == sum(len(encode(t)) for t in texts)
    assert len(short.data[0].embedding) == 8
    assert math.isclose(math.fsum(v * v for v in short.data[0].embedding), 1.0, rel_tol=1e-5)
    assert tokens.usage.prompt_tokens == 4 and len(tokens.data) == 2


async def test_embedding_errors_faults_and_latency() -> None:
    async with sdk() as client:
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.embeddings.create(model="text-embedding-nope", input="x")
        with pytest.raises(openai.BadRequestError) as chat_model:
            await client.embeddings.create(model=MODEL, input="x")
        with pytest.raises(openai.BadRequestError) as too_wide:
            await client.embeddings.create(model=EMBEDDER, input="x", dimensions=65)
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model=EMBEDDER, input=[])
    assert unknown.value.code == "model_not_found"
    assert chat_model.value.param == "model"
    assert too_wide.value.param == "dimensions"
    async with simulator_client(embedding_models=[EMBEDDER], rate_429=1.0) as client:
        limited = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
    assert limited.status_code == 429 and "retry-after" in limited.headers
    async with simulator_client(embedding_models=[EMBEDDER], ttft_ms=30) as client:
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
        waited = time.perf_counter() - started
    assert response.status_code == 200 and waited >= 0.03


async def test_max_tokens_cuts_tool_arguments_with_finish_reason_length() -> None:
    async with simulator_client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body("a long city name", tools=[WEATHER], tool_choice="required", max_tokens=3),
        )
    body = response.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    arguments = choice["message"]["tool_calls"][0]["function"]["arguments"]
    assert arguments == cl100k().decode(cl100k().encode_ordinary('{"city":"a long city name","days":1}')[:3])
    assert body["usage"]["completion_tokens"] == 3
