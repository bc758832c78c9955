"""Issue 13 in the handlers: tool calls, tool results, several choices, structured output and
embeddings — an event in, effects out, no server."""

from __future__ import annotations

import json

import pytest

from schemas.events import (
    ChatMessage,
    FunctionCall,
    GeneratedChoice,
    InferenceInfo,
    RequestRouted,
    RequestScreened,
    RequestSubmitted,
    ResponseGenerated,
    RoutingDecision,
    TokenUsage,
    ToolCall,
    deadline_in,
)
from services.dlp.guard import DlpGuard, DlpSettings
from services.dlp.handlers import screen_input, screen_output
from services.dlp.texts import message_slots, split_arguments
from services.inference.engine import CallOutcome
from services.inference.handlers import embeddings_completed
from services.inference.structured import violation
from services.runtime.effects import Publish, Record, Reply
from services.runtime.settings import MeshSettings, load_config
from tests.handlers.test_handlers import ENVELOPE, RECEIVED, allow_decision

EMAIL = "erika.mustermann@example.org"
IBAN = "DE89 3704 0044 0532 0130 00"


@pytest.fixture(scope="module")
def guard() -> DlpGuard:
    return DlpGuard.from_settings(DlpSettings())


def call(arguments: str, name: str = "send_mail") -> ToolCall:
    return ToolCall(id="call_1", function=FunctionCall(name=name, arguments=arguments))


def generated(content: str = "", tool_calls: list[ToolCall] | None = None,
              more: list[GeneratedChoice] | None = None) -> ResponseGenerated:
    routed = RequestRouted(
        **ENVELOPE, deadline=deadline_in(30), messages=[], trail=[RECEIVED], dlp_input=allow_decision(),
        routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p"),
    )
    return ResponseGenerated(
        **{f: getattr(routed, f) for f in routed.__struct_fields__ if f != "event_id"},
        content=content, tool_calls=tool_calls, more_choices=more or [],
        finish_reason="tool_calls" if tool_calls else "stop",
        usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
        inference=InferenceInfo(route="local-vllm", deployment="d", model="m", model_version="1",
                                config_version="v1", prompt_template_version="t", ttft_ms=None, latency_ms=1.0),
    )


def test_arguments_are_screened_as_the_strings_inside_their_json() -> None:
    strings, rebuild = split_arguments(json.dumps({"to": "M\u00fcller", "n": 3, "cc": ["a", {"k": "v"}]}))
    assert strings == ["to", "Müller", "n", "cc", "a", "k", "v"]  # keys too: a key may be data
    rebuilt = json.loads(rebuild(["to", "<PERSON>", "n", "cc", "a", "k", "v"]))
    assert rebuilt == {"to": "<PERSON>", "n": 3, "cc": ["a", {"k": "v"}]}
    raw, back = split_arguments("not json " + EMAIL)
    assert raw == ["not json " + EMAIL] and back(["x"]) == "x"


def test_tool_results_and_earlier_tool_calls_are_screened_on_input(guard: DlpGuard) -> None:
    event = RequestSubmitted(
        **ENVELOPE, deadline=deadline_in(30), trail=[RECEIVED],
        messages=[
            ChatMessage(role="user", content="Schick die Bestätigung."),
            ChatMessage(role="assistant", content="", tool_calls=[call(json.dumps({"to": EMAIL}))]),
            ChatMessage(role="tool", content=f"Gesendet an {EMAIL}, IBAN {IBAN}", tool_call_id="call_1"),
        ],
    )
    effects = screen_input(guard, event)
    assert isinstance(effects[0], Publish)
    screened = effects[0].event
    assert isinstance(screened, RequestScreened)
    text = json.dumps([m.content for m in screened.messages]) + json.dumps(
        [c.function.arguments for m in screened.messages for c in m.tool_calls or ()])
    assert EMAIL not in text and "0532 0130 00" not in text
    assert screened.messages[1].tool_calls is not None
    assert json.loads(screened.messages[1].tool_calls[0].function.arguments).keys() == {"to"}  # still JSON
    assert screened.messages[2].tool_call_id == "call_1" and screened.messages[2].role == "tool"


def test_model_generated_tool_arguments_never_leave_in_clear(guard: DlpGuard) -> None:
    effects = screen_output(guard, generated(tool_calls=[call(json.dumps({"to": EMAIL, "iban": IBAN}))]))
    assert [type(e) for e in effects] == [Record, Reply]
    reply = effects[-1]
    assert isinstance(reply, Reply)  # the shipped policy redacts: the call goes out, its values replaced
    assert reply.result.tool_calls is not None
    arguments = reply.result.tool_calls[0].function.arguments
    assert json.loads(arguments) == {"to": "<EMAIL_ADDRESS>", "iban": "<IBAN_CODE>"}
    assert reply.result.dlp_output is not None and reply.result.dlp_output.action == "redact"


def test_every_choice_is_screened(guard: DlpGuard) -> None:
    effects = screen_output(guard, generated("Alles gut.", more=[GeneratedChoice(index=1, content=f"Mail {EMAIL}")]))
    reply = effects[-1]
    assert isinstance(reply, Reply)
    assert reply.result.content == "Alles gut."
    assert len(reply.result.more_choices) == 1 and EMAIL not in reply.result.more_choices[0].content


def test_message_slots_rebuild_the_conversation_unchanged() -> None:
    messages = [ChatMessage(role="assistant", content="", tool_calls=[call('{"a": "b"}')]),
                ChatMessage(role="tool", content="r", tool_call_id="call_1", name="send_mail")]
    slots, rebuild = message_slots(messages)
    slots.fill(slots.texts)
    assert rebuild() == [
        ChatMessage(role="assistant", content="", tool_calls=[call('{"a": "b"}')]),
        ChatMessage(role="tool", content="r", tool_call_id="call_1", name="send_mail"),
    ]


@pytest.mark.parametrize(("content", "response_format", "valid"), [
    ('{"a": 1}', {"type": "json_object"}, True),
    ("[1]", {"type": "json_object"}, False),
    ("Sure! {", {"type": "json_object"}, False),
    ('{"a": 1}', {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}, True),
    ('{"a": "x"}', {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}, False),
    ("anything", None, True),
])
def test_structured_output_check(content: str, response_format: dict[str, object] | None, valid: bool) -> None:
    reason = violation(content, response_format)
    assert (reason is None) == valid
    if reason is not None:
        assert '"x"' not in reason  # the reason names the place, never the value


def test_embeddings_end_at_inference_with_their_usage_and_trail() -> None:
    config = load_config(MeshSettings().config_file)
    deployment = config.deployments[0]
    event = RequestRouted(
        **ENVELOPE, deadline=deadline_in(30), trail=[RECEIVED], dlp_input=allow_decision(),
        messages=[ChatMessage(role="user", content="a")],
        routing=RoutingDecision(route=deployment.route, rule_id="r", policy_version="p"),
    )
    outcome = CallOutcome(
        route=deployment.route, deployment=deployment, content="", finish_reason="stop", prompt_tokens=5,
        completion_tokens=0, ttft_ms=None, latency_ms=3.0, gpu_seconds=0.0, cost=0.0, fallback_from=None,
        embeddings=("AACAPw==",),
    )
    effects = embeddings_completed(event, outcome, "EUR")
    assert [type(e) for e in effects] == [Publish, Record, Reply]
    usage, record, reply = effects
    assert isinstance(usage, Publish) and isinstance(record, Record) and isinstance(reply, Reply)
    assert [e.stage for e in record.events] == ["gateway", "inference"]
    assert reply.result.embeddings == ["AACAPw=="] and reply.result.usage is not None
    assert reply.result.usage.prompt_tokens == 5
