"""The Responses API translation (services/gateway/responses_api.py): pure, no server.

Requests map onto the chat wire the gateway validates; refusals name their parameter; the
response object and every stream event validate against the openai SDK's own types, and the
SDK itself (``responses.create``, ``responses.stream``) accepts them over a mock transport."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from services.gateway.openai_api import ChatCompletionRequest
from services.gateway.responses_api import (
    ResponsesInvalid,
    ResponsesRequestError,
    ResponsesStream,
    ResponsesUnsupported,
    chat_request_from_responses,
    response_from_chat,
    responses_param,
    sse,
)

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
GOVERNANCE = {"request_id": "r1", "routing": {"route": "eu", "rule_id": "default", "policy_version": "v1"}}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


# --- requests -----------------------------------------------------------------------------------


def test_string_input_with_instructions() -> None:
    chat = chat_request_from_responses({"model": "gpt-4o", "instructions": "Be brief.", "input": "Hi"})
    assert chat == {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": "Hi"}]}


def test_history_with_function_calls_and_outputs() -> None:
    body = {
        "model": "gpt-4o",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in"},
                                                           {"type": "input_text", "text": "Berlin?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
             "arguments": '{"city":"Berlin"}', "status": "completed"},
            {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Bonn"}'},
            {"type": "function_call_output", "call_id": "call_a", "output": "12 °C"},
            {"type": "function_call_output", "call_id": "call_b",
             "output": [{"type": "input_text", "text": "9 °C"}]},
            {"type": "function_call", "call_id": "call_c", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_c", "output": "?"},
        ],
        "tools": [WEATHER],
    }
    messages = chat_request_from_responses(body)["messages"]
    assert messages == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in"}, {"type": "text", "text": "Berlin?"}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Berlin"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Bonn"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "12 °C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "9 °C"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_c", "content": "?"},
    ]
    ChatCompletionRequest.model_validate(chat_request_from_responses(body))


def test_parameters_tools_and_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    body = {
        "model": "gpt-4o", "input": "x", "stream": True, "temperature": 0.2, "top_p": 0.9,
        "max_output_tokens": 100, "metadata": {"team": "claims"}, "user": "u1", "safety_identifier": "s1",
        "parallel_tool_calls": False, "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
        # neutral values: accepted, change nothing
        "store": True, "include": [], "reasoning": {"effort": None}, "truncation": "disabled",
        "service_tier": "auto", "background": False, "previous_response_id": None,
        "stream_options": {"include_obfuscation": False}, "top_logprobs": 0,
    }
    chat = chat_request_from_responses(body)
    assert chat == {
        "model": "gpt-4o", "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False,
        "metadata": {"team": "claims"}, "user": "u1", "safety_identifier": "s1",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 100, "stream": True, "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": WEATHER["parameters"], "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
    }
    ChatCompletionRequest.model_validate(chat)


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
])
def test_text_formats(fmt: dict[str, Any], expected: dict[str, Any] | None) -> None:
    chat = chat_request_from_responses({"input": "x", "text": {"format": fmt}})
    assert chat.get("response_format") == expected


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_words(choice: str) -> None:
    assert chat_request_from_responses({"input": "x", "tools": [WEATHER], "tool_choice": choice})["tool_choice"] == choice


SECRET = "SECRET-VALUE-42"
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"previous_response_id": SECRET}, "previous_response_id"),
    ({"conversation": SECRET}, "conversation"),
    ({"conversation": {"id": SECRET}}, "conversation"),
    ({"background": True}, "background"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
    ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
    ({"truncation": "auto"}, "truncation"),
    ({"prompt": {"id": SECRET}}, "prompt"),
    ({"top_logprobs": 5}, "top_logprobs"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"prompt_cache_key": SECRET}, "prompt_cache_key"),
    ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
    ({"max_tool_calls": 3}, "max_tool_calls"),
    ({"moderation": {"model": SECRET}}, "moderation"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"stream_options": {"chunking": SECRET}}, "stream_options.chunking"),
    ({"frobnicate": SECRET}, "frobnicate"),
    ({"tools": [WEATHER, {"type": "web_search"}]}, "tools[1].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": [SECRET]}]}, "tools[0].type"),
    ({"tools": [{"type": "mcp", "server_label": SECRET}]}, "tools[0].type"),
    ({"tools": [{"type": "custom", "name": "x"}]}, "tools[0].type"),
    ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"},
                                             {"type": "input_image", "image_url": SECRET}]}]},
     "input[0].content[1].type"),
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "user", "content": [{"type": "input_file", "file_id": SECRET}]}]},
     "input[2].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": SECRET}}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call_output", "call_id": "c",
                 "output": [{"type": "input_image", "image_url": SECRET}]}]}, "input[0].output[0].type"),
    ({"input": [{"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": SECRET}]}]},
     "input[0].summary"),
    ({"input": [{"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": SECRET}]},
     "input[0].encrypted_content"),
    ({"input": [{"type": "item_reference", "id": SECRET}]}, "input[0].type"),
    ({"input": [{"type": "web_search_call", "id": SECRET}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": "a", "extra": SECRET}]}, "input[0].extra"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "namespace": SECRET}]},
     "input[0].namespace"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSED, ids=[p for _, p in REFUSED])
def test_refusals_name_their_param(extra: dict[str, Any], param: str) -> None:
    body = {"model": "gpt-4o", "input": "hello", **extra}
    with pytest.raises(ResponsesUnsupported) as caught:
        chat_request_from_responses(body)
    assert caught.value.param == param
    assert caught.value.code == "unsupported_parameter"
    assert param in caught.value.message
    assert SECRET not in caught.value.message


def test_state_and_builtin_tools_say_why() -> None:
    with pytest.raises(ResponsesUnsupported, match="stores no conversation content"):
        chat_request_from_responses({"input": "x", "previous_response_id": "resp_1"})
    with pytest.raises(ResponsesUnsupported, match="tool gateway"):
        chat_request_from_responses({"input": "x", "tools": [{"type": "web_search"}]})
    with pytest.raises(ResponsesUnsupported, match="DLP"):
        chat_request_from_responses({"input": [{"role": "user", "content": [{"type": "input_image"}]}]})


def test_unknown_key_that_is_not_an_identifier_is_not_echoed() -> None:
    with pytest.raises(ResponsesUnsupported) as caught:
        chat_request_from_responses({"input": "x", "Ich heiße Erika": 1})
    assert caught.value.param == "<key>"
    assert "Erika" not in caught.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"input": 5}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]}, "input[0].content[0].text"),
    ({"input": "x", "instructions": ["x"]}, "instructions"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
])
def test_malformed_fields_are_invalid(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ResponsesInvalid) as caught:
        chat_request_from_responses(body)
    assert caught.value.param == param
    assert isinstance(caught.value, ResponsesRequestError)
    assert caught.value.code == "invalid_value"


@pytest.mark.parametrize(("chat", "responses"), [
    ("max_completion_tokens", "max_output_tokens"),
    ("tools[2].function.name", "tools[2].name"),
    ("tools[2].function", "tools[2]"),
    ("tool_choice.function.name", "tool_choice"),
    ("response_format.json_schema.schema", "text.format.schema"),
    ("response_format", "text.format"),
    ("messages[3].content", "input"),
    ("temperature", "temperature"),
    (None, None),
])
def test_chat_params_name_responses_fields(chat: str | None, responses: str | None) -> None:
    assert responses_param(chat) == responses


# --- responses ----------------------------------------------------------------------------------


def completion(content: str | None = "Hello!", tool_calls: list[dict[str, Any]] | None = None,
               finish_reason: str = "stop") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-2024",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "stellwerk": GOVERNANCE,
    }


def call(call_id: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def test_text_response_validates() -> None:
    request = {"model": "gpt-4o", "instructions": "Be brief.", "input": "Hi", "metadata": {"k": "v"}}
    body = response_from_chat(completion(), request)
    parsed = Response.model_validate(body)
    assert parsed.id == "resp_abc123"
    assert parsed.status == "completed"
    assert parsed.output_text == "Hello!"
    assert parsed.model == "gpt-4o-2024"
    assert parsed.instructions == "Be brief."
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.total_tokens) == (11, 7, 18)
    assert body["stellwerk"] == GOVERNANCE
    assert body["output"][0]["id"].startswith("msg_")
    json.dumps(body)


def test_tool_call_response_validates() -> None:
    request = {"model": "gpt-4o", "input": "Weather?", "tools": [WEATHER], "tool_choice": "required"}
    body = response_from_chat(
        completion(None, [call("call_1", '{"city":"Berlin"}'), call("call_2", '{"city":"Bonn"}')], "tool_calls"),
        request,
    )
    parsed = Response.model_validate(body)
    assert [o.type for o in parsed.output] == ["function_call", "function_call"]
    first = parsed.output[0]
    assert first.type == "function_call"
    assert (first.call_id, first.name, first.arguments, first.status) == (
        "call_1", "get_weather", '{"city":"Berlin"}', "completed")
    assert first.id is not None and first.id.startswith("fc_")
    assert parsed.tools[0].type == "function"
    assert parsed.tool_choice == "required"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_incomplete_responses(finish: str, reason: str) -> None:
    parsed = Response.model_validate(response_from_chat(completion("Hel", finish_reason=finish), {"input": "x"}))
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == reason


def test_json_schema_echo_validates() -> None:
    fmt = {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
    parsed = Response.model_validate(response_from_chat(completion('{"a":1}'), {"input": "x", "text": {"format": fmt}}))
    assert parsed.text is not None and parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"


# --- streams ------------------------------------------------------------------------------------


def chunks(text: str = "Hello, world!", calls: Sequence[tuple[str, str]] = (), finish: str = "stop",
           piece: int = 4, usage: bool = True) -> list[dict[str, Any]]:
    """Chunks as the gateway streams them: role, content pieces, tool calls in pieces, the
    finish chunk with ``stellwerk``, the usage chunk."""
    base = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "stellwerk"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": text[i : i + piece]}) for i in range(0, len(text), piece)]
    for index, (call_id, arguments) in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                          "function": {"name": "get_weather", "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + piece]}}]})
                for i in range(0, len(arguments), piece)]
    final = chunk({}, finish, stellwerk=GOVERNANCE)
    final["model"] = "gpt-4o-2024"
    out.append(final)
    if usage:
        out.append({**base, "model": "gpt-4o-2024", "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}})
    return out


def run(request: dict[str, Any], stream_chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = ResponsesStream(request)
    events: list[dict[str, Any]] = []
    for c in stream_chunks:
        events += stream.feed(c)
    events += stream.finish()
    assert stream.finish() == []
    for event in events:
        EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_text_stream_events_in_openai_order() -> None:
    events = run({"model": "gpt-4o", "input": "Hi", "stream": True}, chunks())
    types = [e["type"] for e in events]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello, world!"
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "Hello, world!"
    assert final.status == "completed"
    assert final.model == "gpt-4o-2024"
    assert final.usage is not None and final.usage.total_tokens == 14
    assert events[-1]["response"]["stellwerk"] == GOVERNANCE
    assert events[0]["response"]["output"] == [] and events[0]["response"]["status"] == "in_progress"
    assert sse(events[0]).startswith(b"event: response.created\ndata: {")
    assert sse(events[0]).endswith(b"\n\n")


def test_streamed_tool_calls_reassemble() -> None:
    args_a, args_b = '{"city": "Berlin", "unit": "celsius"}', '{"city": "Bonn"}'
    events = run({"input": "x", "tools": [WEATHER]},
                 chunks("", [("call_a", args_a), ("call_b", args_b)], "tool_calls"))
    types = [e["type"] for e in events]
    assert "response.output_text.delta" not in types  # no empty message item
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["call_id"] for e in added] == ["call_a", "call_b"]
    assert [e["output_index"] for e in added] == [0, 1]
    # the first call is done before the second is added
    assert types.index("response.function_call_arguments.done") < types.index("response.output_item.added", 3)
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"]) for e in done] == [("get_weather", args_a), ("get_weather", args_b)]
    for call_id, args in (("fc_s1_0", args_a), ("fc_s1_1", args_b)):
        pieces = [e["delta"] for e in events
                  if e["type"] == "response.function_call_arguments.delta" and e["item_id"] == call_id]
        assert "".join(pieces) == args
    final = Response.model_validate(events[-1]["response"])
    assert [(o.type, getattr(o, "arguments", None)) for o in final.output] == [
        ("function_call", args_a), ("function_call", args_b)]


def test_text_then_tool_call_stream() -> None:
    events = run({"input": "x", "tools": [WEATHER]}, chunks("Checking.", [("call_a", '{"city":"X"}')], "tool_calls"))
    final = Response.model_validate(events[-1]["response"])
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output_text == "Checking."


def test_length_stream_is_incomplete() -> None:
    events = run({"input": "x", "max_output_tokens": 3}, chunks("Hello", finish="length"))
    assert events[-1]["type"] == "response.incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    assert events[-2]["item"]["status"] == "incomplete"


def test_blocked_output_mid_stream_fails() -> None:
    stream_chunks = chunks("Hello, wor", finish="content_filter", usage=False)
    error = {"error": {"message": "The answer was blocked by the output DLP policy.", "type": "stellwerk_error",
                       "param": None, "code": "dlp_blocked_output", "status": 422,
                       "stellwerk": {"request_id": "r1", "rule_id": "dlp.block.iban"}}}
    events = run({"input": "x"}, [*stream_chunks, error])
    assert events[-1]["type"] == "response.failed"
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "server_error"
    assert failed.error.message == "The answer was blocked by the output DLP policy."
    assert events[-1]["response"]["stellwerk"]["error"] == {"code": "dlp_blocked_output", "rule_id": "dlp.block.iban"}
    assert events[-2]["type"] == "response.output_item.done"
    assert events[-2]["item"]["status"] == "incomplete"


def test_stellwerk_error_on_finish_chunk_fails() -> None:
    stream_chunks = chunks("Hi", finish="content_filter", usage=False)
    stream_chunks[-1]["stellwerk"] = {**GOVERNANCE, "error": {"code": "dlp_blocked_output", "message": "Blocked."}}
    events = run({"input": "x"}, stream_chunks)
    assert [e["type"] for e in events].count("response.failed") == 1
    assert events[-1]["type"] == "response.failed"


def test_stream_without_finish_fails() -> None:
    events = run({"input": "x"}, chunks(usage=False)[:-1])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["stellwerk"]["error"]["code"] == "stream_interrupted"


def test_rate_limit_error_before_any_text() -> None:
    events = run({"input": "x"}, [{"error": {"message": "Rate limit reached.", "code": "rate_limited"}}])
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


# --- the openai SDK over a mock transport --------------------------------------------------------


def canned(chat: dict[str, Any]) -> dict[str, Any]:
    """A model that calls the first tool once, then answers with text."""
    answered_tool = any(m["role"] == "tool" for m in chat["messages"])
    if chat.get("tools") and not answered_tool:
        return completion(None, [call("call_1", '{"city":"Berlin"}')], "tool_calls")
    if chat.get("response_format", {}).get("type") == "json_schema":
        return completion('{"city":"Berlin","celsius":12}')
    return completion("It is 12 °C in Berlin.")


def as_chunks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    message = body["choices"][0]["message"]
    calls = [(c["id"], c["function"]["arguments"]) for c in message.get("tool_calls") or ()]
    yield from chunks(message["content"] or "", calls, body["choices"][0]["finish_reason"])


def gateway(request: httpx.Request) -> httpx.Response:
    """What the gateway will do on POST /v1/responses, minus the mesh."""
    assert request.url.path == "/v1/responses"
    body = json.loads(request.content)
    try:
        chat = chat_request_from_responses(body)
    except ResponsesRequestError as exc:
        return httpx.Response(400, json={"error": {"message": exc.message, "type": "invalid_request_error",
                                                   "param": exc.param, "code": exc.code}})
    ChatCompletionRequest.model_validate(chat)
    answer = canned(chat)
    if not chat.get("stream"):
        return httpx.Response(200, json=response_from_chat(answer, body))
    stream = ResponsesStream(body)
    events = [e for c in as_chunks(answer) for e in stream.feed(c)] + stream.finish()
    return httpx.Response(200, content=b"".join(sse(e) for e in events),
                          headers={"content-type": "text/event-stream"})


@pytest.fixture
def client() -> Iterator[openai.OpenAI]:
    with httpx.Client(transport=httpx.MockTransport(gateway)) as http:
        yield openai.OpenAI(api_key="sk-test", base_url="http://stellwerk.test/v1", http_client=http, max_retries=0)


def test_sdk_create_round_trip_with_tool_loop(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o", instructions="Use tools.", input="Weather in Berlin?",
                                    tools=[WEATHER])  # type: ignore[list-item]
    assert first.status == "completed"
    calls = [o for o in first.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    # The agent loop: the previous output items go back as input, with the tool's result.
    history: list[Any] = [{"role": "user", "content": "Weather in Berlin?"},
                          *[o.model_dump(exclude_none=True) for o in first.output],
                          {"type": "function_call_output", "call_id": calls[0].call_id, "output": "12 °C"}]
    second = client.responses.create(model="gpt-4o", input=history, tools=[WEATHER])  # type: ignore[list-item]
    assert second.output_text == "It is 12 °C in Berlin."
    assert second.usage is not None and second.usage.total_tokens == 18
    # and that answer, too, goes back as history
    third_input = [*history, *[o.model_dump(exclude_none=True) for o in second.output],
                   {"role": "user", "content": "Thanks"}]
    assert client.responses.create(model="gpt-4o", input=third_input).output_text


def test_sdk_refusal_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_1")
    assert caught.value.param == "previous_response_id"
    assert caught.value.code == "unsupported_parameter"


def test_sdk_create_stream(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o", input="Hi", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "It is 12 °C in Berlin."


def test_sdk_stream_helper_accumulates(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="Weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in seen
    call_item = final.output[0]
    assert call_item.type == "function_call"
    assert json.loads(call_item.arguments) == {"city": "Berlin"}

    with client.responses.stream(model="gpt-4o", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "It is 12 °C in Berlin."


def test_sdk_parse_with_json_schema(client: openai.OpenAI) -> None:
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        celsius: int

    parsed = client.responses.parse(model="gpt-4o", input="Weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Berlin", celsius=12)
