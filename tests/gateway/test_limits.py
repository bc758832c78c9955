"""The pure limit checks (services/gateway/limits.py) and the request model's refusals."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.gateway import limits
from services.gateway.openai_api import NOT_YET_SUPPORTED, ChatCompletionRequest, mesh_messages, mesh_params
from services.gateway.settings import GatewayLimits

LIMITS = GatewayLimits()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:', max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4),
                                                                       children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=12))
def test_depth_on_raw_bytes_agrees_with_the_parsed_value(value: object, limit: int) -> None:
    raw = json.dumps(value).encode()
    assert limits.json_depth_exceeds(raw, limit) == (limits.json_depth(value) > limit)


def test_depth_of_5000_levels_is_judged_without_parsing() -> None:
    assert limits.json_depth_exceeds(b"[" * 5000 + b"]" * 5000, 32)
    assert limits.json_depth_exceeds(b'{"a":' * 5000 + b"1" + b"}" * 5000, 32)
    assert not limits.json_depth_exceeds(b'["' + b"[" * 5000 + b'"]', 32), "brackets inside strings do not count"


def test_lone_surrogates_are_found_and_pairs_are_not() -> None:
    assert limits.lone_surrogate_path(json.loads('{"messages": [{"content": "\\ud800 hi"}]}')) == (
        "messages", 0, "content")
    assert limits.lone_surrogate_path(json.loads('{"a": "\\ud83d\\ude00"}')) is None  # a valid pair: 😀
    assert limits.lone_surrogate_path(json.loads('{"\\udfff": 1}')) == ("<key>",)


def test_max_tokens_beyond_every_context_is_a_400_naming_it() -> None:
    violation = limits.check_context(10, 10**12, "max_tokens", LIMITS)
    assert violation is not None and (violation.status, violation.param) == (400, "max_tokens")
    assert "1000000000000" not in violation.message
    long_prompt = limits.check_context(LIMITS.context_window_tokens + 1, None, "max_tokens", LIMITS)
    assert long_prompt is not None and (long_prompt.code, long_prompt.param) == ("context_length_exceeded", "messages")
    assert limits.check_context(1000, 1000, "max_tokens", LIMITS) is None


def test_a_request_larger_than_a_whole_rate_window_is_413_or_400_never_429() -> None:
    assert limits.oversized_for_rate_limit(30_000, None, "max_tokens", 20_000).status == 413
    too_long_answer = limits.oversized_for_rate_limit(100, 50_000, "max_completion_tokens", 20_000)
    assert (too_long_answer.status, too_long_answer.param) == (400, "max_completion_tokens")


def test_message_and_metadata_limits() -> None:
    small = GatewayLimits(max_messages=2, max_message_chars=5, max_metadata_keys=1, max_metadata_value_chars=3)
    assert limits.check_messages(["a", "b", "c"], small) == limits.Violation(
        400, "too_many_messages", "At most 2 messages per request.", "messages")
    long = limits.check_messages(["ok", "toolong"], small)
    assert long is not None and (long.status, long.param) == (413, "messages[1].content")
    assert limits.check_metadata({"a": "1", "b": "2"}, small) is not None
    assert limits.check_metadata({"a": "1234"}, small) is not None
    assert limits.check_metadata({"a": "123"}, small) is None


def test_headers_and_timeouts() -> None:
    assert limits.header_violation(LIMITS.max_header_bytes + 1, LIMITS) is not None
    for bad in ("nan", "inf", "-1", "0", "x"):
        with pytest.raises(ValueError, match=r"number|convert"):
            limits.positive_seconds(bad)
    assert limits.positive_seconds("2.5") == 2.5
    assert limits.valid_identifier("corr-1:abc") and not limits.valid_identifier("has space")


def _refusal(body: dict[str, object]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(body)
    errors = info.value.errors()
    # As the gateway's handler does: the specific error, not the failed members of a union.
    error = next((e for e in errors if e["type"] in ("unsupported_parameter", "extra_forbidden")), errors[0])
    return error["type"], (error.get("ctx") or {}).get("param", "")


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("name", sorted(NOT_YET_SUPPORTED))
def test_every_not_yet_supported_parameter_is_refused_by_name(name: str) -> None:
    assert _refusal({"messages": MESSAGES, name: {"some": "value"}}) == ("unsupported_parameter", name)


def test_openai_defaults_of_unsupported_parameters_are_accepted() -> None:
    body = ChatCompletionRequest.model_validate({
        "messages": MESSAGES, "n": 1, "frequency_penalty": 0.0, "presence_penalty": 0, "logprobs": False,
        "tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "user": "end-user-7",
        "seed": None,
    })
    assert body.user == "end-user-7"
    assert _refusal({"messages": MESSAGES, "logprobs": 0}) == ("unsupported_parameter", "logprobs")
    assert _refusal({"messages": MESSAGES, "store": True}) == ("unsupported_parameter", "store")


def test_tools_history_and_structured_output_are_carried() -> None:
    body = ChatCompletionRequest.model_validate({
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "n": 2, "seed": 7,
    })
    assert body.wants_tools and body.json_output
    params = mesh_params(body)
    assert params.tool_choice == {"type": "function", "function": {"name": "weather"}}
    assert params.response_format == {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    assert (params.n, params.seed) == (2, 7)
    messages = mesh_messages(body)
    assert messages[1].tool_calls is not None and messages[1].tool_calls[0].function.name == "weather"
    assert messages[2].tool_call_id == "c1"


def test_unknown_fields_images_and_function_messages_are_refused() -> None:
    assert _refusal({"messages": MESSAGES, "bogus": 1})[0] == "extra_forbidden"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]
    assert _refusal({"messages": image}) == ("unsupported_parameter", "type")
    function = [{"role": "function", "content": "42", "name": "f"}]
    assert _refusal({"messages": function}) == ("unsupported_parameter", "role")
    assert _refusal({"messages": MESSAGES, "tools": [{"type": "web_search"}]}) == ("unsupported_parameter", "type")


def test_only_known_routes_name_a_rate_limit_endpoint() -> None:
    endpoints = ["local-vllm", "api-gpt52", "standard", "high"]
    assert limits.rate_limit_endpoint("api-gpt52", endpoints) == "api-gpt52"
    assert limits.rate_limit_endpoint("high", endpoints) == "high"
    assert limits.rate_limit_endpoint("gpt-4o-mini", endpoints) == "stellwerk"
    assert limits.rate_limit_endpoint(None, endpoints) == "stellwerk"
    assert _refusal_type({"messages": MESSAGES, "model": "ä model"}) == "string_pattern_mismatch"


def _refusal_type(body: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(body)
    return str(info.value.errors()[0]["type"])
