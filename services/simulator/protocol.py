"""The OpenAI wire shapes the simulator reads and the error bodies it writes."""

from __future__ import annotations

from typing import Any

import msgspec


class ContentPart(msgspec.Struct, frozen=True):
    type: str
    text: str | None = None


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, frozen=True):
    """A tool call of an earlier assistant turn, as the client sends it back."""

    function: FunctionCall
    id: str = ""
    type: str = "function"


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class FunctionDefinition(msgspec.Struct, frozen=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True):
    function: FunctionDefinition
    type: str = "function"


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    function: NamedFunction
    type: str = "function"


class JsonSchemaFormat(msgspec.Struct, frozen=True):
    name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(msgspec.Struct, frozen=True):
    type: str
    json_schema: JsonSchemaFormat | None = None


TOOL_CHOICES = frozenset({"none", "auto", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


class ChatCompletionRequest(msgspec.Struct, frozen=True):
    """Sampling fields (temperature, seed, penalties, ...) are checked and then ignored: the
    simulator's answers are deterministic. Unknown fields are accepted, as vLLM does."""

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @property
    def token_limit(self) -> int | None:
        # max_completion_tokens is the newer name; OpenAI prefers it when both are sent.
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def is_plain(self) -> bool:
        """No tools, no structured output, one choice, no stop, no tool result to answer:
        the hot path (the benchmarks' baseline) serves it."""
        return (
            self.tools is None
            and self.response_format is None
            and self.n == 1
            and self.stop is None
            and self.messages[-1].role != "tool"
        )

    def problem(self) -> tuple[str, str] | None:
        """(message, param) of the first invalid field, as OpenAI would refuse it; None if valid."""
        if not 1 <= self.n <= 128:
            return "n must be between 1 and 128", "n"
        for param, penalty in (
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ):
            if penalty is not None and not -2.0 <= penalty <= 2.0:
                return f"{param} must be between -2 and 2", param
        if self.logit_bias is not None and any(not -100 <= v <= 100 for v in self.logit_bias.values()):
            return "logit_bias values must be between -100 and 100", "logit_bias"
        if isinstance(self.stop, list) and len(self.stop) > 4:
            return "stop may name at most 4 sequences", "stop"
        if self.tools is not None and any(tool.type != "function" for tool in self.tools):
            return "only tools of type 'function' are supported", "tools"
        choice = self.tool_choice
        if isinstance(choice, str):
            if choice not in TOOL_CHOICES:
                return f"Invalid value for 'tool_choice': {choice!r}", "tool_choice"
            if choice != "none" and not self.tools:
                return "tool_choice is only allowed when tools are specified", "tool_choice"
        elif choice is not None and (
            not self.tools or all(t.function.name != choice.function.name for t in self.tools)
        ):
            return f"tool_choice names an unknown function {choice.function.name!r}", "tool_choice"
        fmt = self.response_format
        if fmt is not None:
            if fmt.type not in RESPONSE_FORMATS:
                return f"Invalid value for 'response_format.type': {fmt.type!r}", "response_format"
            if fmt.type == "json_schema" and fmt.json_schema is None:
                return "response_format json_schema needs a json_schema", "response_format"
        return None


class EmbeddingRequest(msgspec.Struct, frozen=True):
    model: str
    # A string, a list of strings, a list of token ids or a list of token-id lists (vLLM).
    input: str | list[str | int | list[int]]
    dimensions: int | None = None
    encoding_format: str = "float"
    user: str | None = None


request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
embedding_decoder = msgspec.json.Decoder(EmbeddingRequest)
json_encoder = msgspec.json.Encoder()


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return json_encoder.encode({"error": {"message": message, "type": type_, "param": param, "code": code}})
