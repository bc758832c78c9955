"""The OpenAI surface through the whole mesh (issue 13), with the official ``openai`` SDK.

The simulator answers with tool calls (a named ``tool_choice`` is always called; ``auto``
calls the tools the user's text names), with JSON that follows a requested schema, with
``n`` choices and with embeddings. Its ``echo-b64:`` form makes the *model* write personal
data that was not in the prompt in clear — the case output DLP exists for.
"""

from __future__ import annotations

import base64
import json
import struct

import jsonschema_rs
import nats
import openai
import pytest

from stellwerk.supervisor import Mesh
from tests.integration.mesh import audit_events

API_KEY = "sk-stellwerk-demo"
EMAIL = "erika.mustermann@example.org"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEND_MAIL = {
    "type": "function",
    "function": {
        "name": "send_mail",
        "parameters": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "urgent": {"type": "boolean"}},
            "required": ["to", "urgent"],
        },
    },
}
CLAIM_SCHEMA = {
    "type": "object",
    "properties": {
        "claim_id": {"type": "string"},
        "amount": {"type": "number"},
        "items": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "string", "enum": ["open", "closed"]},
    },
    "required": ["claim_id", "amount", "items", "status"],
    "additionalProperties": False,
}
CLAIM_FORMAT = {"type": "json_schema", "json_schema": {"name": "claim", "schema": CLAIM_SCHEMA, "strict": True}}


def sync_client(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.gateway_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def async_client(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def emitted(text: str) -> str:
    return "echo-b64:" + base64.b64encode(text.encode()).decode()


def test_tool_round_trip_with_the_sync_sdk(mesh: Mesh) -> None:
    client = sync_client(mesh)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Wie ist das Wetter in Köln?"}]
    first = client.chat.completions.create(
        model="stellwerk", messages=messages, tools=[WEATHER, SEND_MAIL],  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert set(json.loads(call.function.arguments)) == {"city"}  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12 Grad, Regen"},
    ]
    second = client.chat.completions.create(model="stellwerk", messages=messages,  # type: ignore[arg-type]
                                            tools=[WEATHER, SEND_MAIL])  # type: ignore[arg-type]
    assert second.choices[0].finish_reason == "stop"
    assert "12 Grad, Regen" in (second.choices[0].message.content or "")


def test_auto_tool_choice_calls_the_tools_named_in_parallel(mesh: Mesh) -> None:
    completion = sync_client(mesh).chat.completions.create(
        model="stellwerk", tools=[WEATHER, SEND_MAIL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "get_weather für Bonn, dann send_mail an das Team"}],
    )
    calls = completion.choices[0].message.tool_calls or []
    assert sorted(c.function.name for c in calls) == ["get_weather", "send_mail"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2


async def test_pii_in_model_generated_tool_arguments_never_reaches_the_client(mesh: Mesh) -> None:
    completion = await async_client(mesh).chat.completions.create(
        model="stellwerk", tools=[SEND_MAIL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "send_mail"}},
        messages=[{"role": "user", "content": emitted(f"Bitte an {EMAIL} schreiben")}],
    )
    calls = completion.choices[0].message.tool_calls or []
    assert len(calls) == 1
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert EMAIL not in json.dumps(arguments)
    assert "<EMAIL_ADDRESS>" in arguments["to"] and arguments["urgent"] is True  # still the tool's shape
    governance = completion.model_extra["stellwerk"]  # type: ignore[index]
    assert governance["dlp_output"]["action"] == "redact"


async def test_streamed_tool_calls_reassemble_in_the_sdk(mesh: Mesh) -> None:
    stream = await async_client(mesh).chat.completions.create(
        model="stellwerk", tools=[WEATHER], stream=True,  # type: ignore[list-item]
        tool_choice="required", messages=[{"role": "user", "content": "Wetter?"}],
    )
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                if delta.function and delta.function.name:
                    names[delta.index] = delta.function.name
                arguments[delta.index] = arguments.get(delta.index, "") + (
                    delta.function.arguments if delta.function and delta.function.arguments else "")
            finish = choice.finish_reason or finish
    assert names == {0: "get_weather"} and finish == "tool_calls"
    assert set(json.loads(arguments[0])) == {"city"}


def test_json_schema_output_is_validated(mesh: Mesh) -> None:
    completion = sync_client(mesh).chat.completions.create(
        model="stellwerk", response_format=CLAIM_FORMAT,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Erfasse den Schaden als JSON."}],
    )
    document = json.loads(completion.choices[0].message.content or "")
    assert jsonschema_rs.is_valid(CLAIM_SCHEMA, document)


async def test_an_invalid_answer_is_asked_again_once_then_refused(mesh: Mesh) -> None:
    client = async_client(mesh)
    recovered = await client.chat.completions.create(
        model="stellwerk", response_format=CLAIM_FORMAT,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Schaden als JSON [sim:invalid-json]"}],
    )
    assert jsonschema_rs.is_valid(CLAIM_SCHEMA, json.loads(recovered.choices[0].message.content or ""))
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(
            model="stellwerk", response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "Schaden als JSON [sim:invalid-json-always]"}],
        )
    assert refused.value.status_code == 502
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "output_schema_violation"
    request_id = refused.value.response.json()["error"]["stellwerk"]["request_id"]
    connection = await nats.connect(mesh.url)
    try:
        events = [e for e in await audit_events(connection.jetstream()) if e.request_id == request_id]
    finally:
        await connection.drain()
    assert any(e.reason_code == "output_schema_violation" for e in events)
    recovered_id = recovered.model_extra["stellwerk"]["request_id"]  # type: ignore[index]
    assert recovered_id


async def test_json_schema_streams_as_one_validated_document(mesh: Mesh) -> None:
    stream = await async_client(mesh).chat.completions.create(
        model="stellwerk", response_format=CLAIM_FORMAT, stream=True,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "JSON bitte"}],
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert jsonschema_rs.is_valid(CLAIM_SCHEMA, json.loads(text))


def test_n_returns_that_many_screened_choices(mesh: Mesh) -> None:
    completion = sync_client(mesh).chat.completions.create(
        model="stellwerk", n=2, seed=7, presence_penalty=0.5, frequency_penalty=0.1,
        messages=[{"role": "user", "content": emitted(f"Kontakt: {EMAIL}")}],
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert EMAIL not in (choice.message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def _vector(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embeddings_are_screened_routed_and_accounted(mesh: Mesh) -> None:
    client = sync_client(mesh)
    single = client.embeddings.create(model="stellwerk", input="Wasserschaden im Keller")
    assert len(single.data) == 1 and len(single.data[0].embedding) > 8
    batch = client.embeddings.create(model="stellwerk", input=["Wasserschaden im Keller", "Sturmschaden"],
                                     encoding_format="base64")
    assert [d.index for d in batch.data] == [0, 1]
    first = _vector(batch.data[0].embedding)  # type: ignore[arg-type]
    assert first == pytest.approx(single.data[0].embedding, rel=1e-6)  # same text, same vector
    assert batch.usage.prompt_tokens > single.usage.prompt_tokens
    governance = batch.model_extra["stellwerk"]  # type: ignore[index]
    assert governance["routing"]["route"] == "local-embeddings"
    assert governance["dlp_input"]["action"] == "allow"
    with_pii = client.embeddings.create(model="stellwerk", input=f"Kontakt {EMAIL}")
    assert with_pii.model_extra["stellwerk"]["dlp_input"]["action"] != "allow"  # type: ignore[index]


def test_token_id_inputs_are_refused_by_name(mesh: Mesh) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sync_client(mesh).embeddings.create(model="stellwerk", input=[[1, 2, 3]])
    assert info.value.code == "unsupported_parameter" and info.value.param == "input"


# --- /v1/responses: mapped onto the chat path ----------------------------------------------------


def test_responses_text_and_tools_with_the_sdk(mesh: Mesh) -> None:
    client = sync_client(mesh)
    response = client.responses.create(model="stellwerk", instructions="Kurz antworten.", input="Guten Morgen")
    assert response.status == "completed" and response.output_text == "Guten Morgen"
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"],  # type: ignore[index]
              "strict": True}]
    called = client.responses.create(model="stellwerk", input="Bitte get_weather für Köln", tools=tools)  # type: ignore[arg-type]
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    answered = client.responses.create(model="stellwerk", tools=tools, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "Bitte get_weather für Köln"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
         "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "9 Grad"},
    ])
    assert "9 Grad" in answered.output_text


async def test_responses_stream_and_refusals(mesh: Mesh) -> None:
    client = async_client(mesh)
    async with client.responses.stream(model="stellwerk", input=emitted(f"Schreib {EMAIL}")) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert EMAIL not in final.output_text and "<EMAIL_ADDRESS>" in final.output_text
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="stellwerk", input="x", previous_response_id="resp_1")
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as builtin:
        await client.responses.create(model="stellwerk", input="x", tools=[{"type": "web_search"}])
    assert builtin.value.param == "tools[0].type"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_123")


# --- model: a route, a class or an alias; the policy still decides ------------------------------


def test_models_lists_routes_with_their_capabilities(mesh: Mesh) -> None:
    listed = {m.id: m for m in sync_client(mesh).models.list()}
    assert "stellwerk" in listed and "local-embeddings" in listed
    embeddings = listed["local-embeddings"].model_extra["stellwerk"]  # type: ignore[index]
    assert embeddings["capabilities"] == ["embeddings"] and embeddings["locality"] == "local"


def test_a_named_route_is_used_when_the_policy_allows_it(mesh: Mesh) -> None:
    client = sync_client(mesh)
    small = client.chat.completions.with_raw_response.create(
        model="local-small", messages=[{"role": "user", "content": "Hallo"}])
    assert small.headers["x-stellwerk-route"] == "local-small"
    governance = small.parse().model_extra["stellwerk"]  # type: ignore[index]
    assert governance["routing"]["rule_id"] == "request.named_route"


def test_a_named_route_the_policy_forbids_is_a_403_with_the_rule(mesh: Mesh) -> None:
    # Highly confidential data may never leave the house: the external route is not allowed.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sync_client(mesh).chat.completions.create(
            model="api-gpt52", messages=[{"role": "user", "content": "Befund"}],
            metadata={"data_sensitivity": "highly_confidential"})
    error = refused.value.response.json()["error"]
    assert error["code"] == "route_not_allowed"
    assert error["stellwerk"]["rule_id"] == "request.named_route.not_allowed"


def test_an_unknown_model_is_a_404(mesh: Mesh) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        sync_client(mesh).chat.completions.create(model="gpt-9-ultra", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"


def test_a_parameter_the_model_refuses_is_a_400_not_an_outage(mesh: Mesh) -> None:
    # The embedding model has 384 dimensions: the model server refuses more, the caller gets a
    # 400 naming the route's refusal — no 502, no breaker failure, no fallback.
    with pytest.raises(openai.BadRequestError) as refused:
        sync_client(mesh).embeddings.create(model="stellwerk", input="Sturmschaden", dimensions=4096)
    assert refused.value.code == "unsupported_by_route"
