"""The OpenAI wire format the gateway speaks (requests in, completions and errors out)."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any, Final, Literal

import jsonschema_rs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.events import (
    ChatMessage,
    FunctionCall,
    GeneratedChoice,
    GenerationParams,
    RequestResult,
    ToolCall,
)
from services.gateway.limits import lone_surrogate_path, param_path

# --- What the mesh does not carry (issue 13) ---------------------------------------------------
# OpenAI chat parameters the mesh cannot honour. A request that sets one gets a 400
# ``unsupported_parameter`` naming it — never a silent drop. The values listed are OpenAI's
# defaults: sending them changes nothing, so they are accepted (clients that always send
# ``logprobs: false`` keep working). docs/openai.md gives the reason for each.
NOT_YET_SUPPORTED: Final[dict[str, tuple[object, ...]]] = {
    # Deprecated since 2023; every client that still sends them also speaks ``tools``.
    "functions": ([],),
    "function_call": ("none",),
    # Token strings of the unscreened answer: they would bypass output DLP.
    "logprobs": (False,),
    "top_logprobs": (0,),
    # Audio and predicted outputs: DLP screens text only.
    "audio": (),
    "modalities": (["text"],),
    "prediction": (),
    # Provider-side features the routes do not declare.
    "reasoning_effort": (),
    "verbosity": (),
    "web_search_options": (),
    "service_tier": ("auto", "default"),
    # Stellwerk stores no conversation content (data minimisation): nothing to store.
    "store": (False,),
    "prompt_cache_key": (),
}
# The same for fields of a message.
MESSAGE_NOT_YET_SUPPORTED: Final[dict[str, tuple[object, ...]]] = {
    "function_call": (),
    "refusal": (),
    "audio": (),
}
# Roles and content-part types the mesh does not carry (images, audio and files, which DLP
# cannot screen: refused, fail closed).
ROLES_NOT_YET_SUPPORTED: Final = frozenset({"function"})
PARTS_NOT_YET_SUPPORTED: Final = frozenset({"image_url", "input_audio", "file", "refusal"})
# More answers per request than this are refused: each one is a full model call's worth of
# tokens, screened and accounted.
MAX_CHOICES: Final = 8
# A function name as OpenAI allows it.
FUNCTION_NAME: Final = r"^[A-Za-z0-9_\-]{1,64}$"


def _valid_unicode(data: object) -> object:
    """``data`` unchanged, or a 400 naming the first string with an unpaired UTF-16 surrogate."""
    where = lone_surrogate_path(data)
    if where is not None:
        raise PydanticCustomError(
            "invalid_unicode", "a string contains an unpaired UTF-16 surrogate", {"param": param_path(where)}
        )
    return data


def _same(value: object, neutral: object) -> bool:
    """JSON equality: ``0`` and ``0.0`` are the same number, ``false`` is not ``0``."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    if isinstance(value, int | float) and isinstance(neutral, int | float):
        return value == neutral
    return type(value) is type(neutral) and value == neutral


def _unsupported(data: object, table: dict[str, tuple[object, ...]]) -> object:
    """Refuse a parameter of ``table`` set to anything but a neutral value; drop neutral ones."""
    if not isinstance(data, dict):
        return data
    kept = dict(data)
    for name, neutral in table.items():
        if name not in kept:
            continue
        value = kept[name]
        if value is None or any(_same(value, n) for n in neutral):
            del kept[name]
            continue
        raise PydanticCustomError(
            "unsupported_parameter", "{param} is not supported by this gateway yet", {"param": name}
        )
    return kept


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: StrictStr

    @model_validator(mode="before")
    @classmethod
    def _known_type(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") in PARTS_NOT_YET_SUPPORTED:
            raise PydanticCustomError(
                "unsupported_parameter", "content parts of type {kind} are not supported yet",
                {"param": "type", "kind": data["type"]},
            )
        return data


class InboundFunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(pattern=FUNCTION_NAME)
    arguments: StrictStr = ""


class InboundToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: InboundFunctionCall


class InboundMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = Field(default=None, pattern=FUNCTION_NAME)
    tool_calls: list[InboundToolCall] | None = None
    tool_call_id: StrictStr | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _tool_fields_fit_role(self) -> InboundMessage:
        if self.tool_calls and self.role != "assistant":
            raise PydanticCustomError("invalid_value", "only assistant messages carry tool_calls",
                                      {"param": "tool_calls"})
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise PydanticCustomError("invalid_value", "a tool message needs tool_call_id, and only it has one",
                                      {"param": "tool_call_id"})
        return self

    @model_validator(mode="before")
    @classmethod
    def _not_yet(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("role") in ROLES_NOT_YET_SUPPORTED:
            raise PydanticCustomError(
                "unsupported_parameter", "messages with role {role} are not supported yet",
                {"param": "role", "role": data["role"]},
            )
        return _unsupported(data, MESSAGE_NOT_YET_SUPPORTED)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(pattern=FUNCTION_NAME)
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDefinition

    @model_validator(mode="before")
    @classmethod
    def _function_only(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") not in (None, "function"):
            raise PydanticCustomError(
                "unsupported_parameter", "only tools of type function are supported", {"param": "type"}
            )
        return data


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: StrictStr = Field(pattern=FUNCTION_NAME)
    description: StrictStr | None = None
    # ``schema`` shadows a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError("invalid_value", "json_schema is required for type json_schema, and only there",
                                      {"param": "json_schema"})
        if self.json_schema is not None and self.json_schema.schema_ is not None:
            try:
                jsonschema_rs.validator_for(self.json_schema.schema_)
            except Exception:  # noqa: BLE001 - the library's errors quote the schema; name the field only
                raise PydanticCustomError("invalid_value", "the schema is not a valid JSON Schema",
                                          {"param": "json_schema.schema"}) from None
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


MetadataValue = StrictStr | StrictBool | StrictInt | StrictFloat | None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown fields are refused (``extra="forbid"``), as are
    set parameters of :data:`NOT_YET_SUPPORTED`; limits are checked by ``limits.py``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # Advisory only: the routing policy chooses the model. An identifier (it names a rate-limit
    # endpoint), like every model id OpenAI-compatible clients send.
    model: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:/@+\-]{1,128}$")
    messages: list[InboundMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: StrictStr | list[StrictStr] | None = Field(default=None, max_length=4)
    metadata: dict[StrictStr, MetadataValue] | None = None
    # The end user's id (Open WebUI, LangChain send it): only a hash of it travels on, into
    # the audit trail and to the provider (``GenerationParams.user``).
    user: StrictStr | None = Field(default=None, max_length=256)
    safety_identifier: StrictStr | None = Field(default=None, max_length=256)
    tools: list[ToolDefinition] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=MAX_CHOICES)
    seed: StrictInt | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[StrictStr, float] | None = Field(default=None, max_length=300)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise PydanticCustomError("invalid_value", "tool_choice needs tools", {"param": "tool_choice"})
        if isinstance(self.tool_choice, NamedToolChoice) and self.tools and self.tool_choice.function.name not in {
            t.function.name for t in self.tools
        }:
            raise PydanticCustomError("invalid_value", "tool_choice names a function that tools does not declare",
                                      {"param": "tool_choice"})
        return self

    @property
    def json_output(self) -> bool:
        """The answer must be a JSON document (validated before the caller gets it)."""
        return self.response_format is not None and self.response_format.type != "text"

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def end_user(self) -> str | None:
        return self.safety_identifier or self.user

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: object) -> object:
        return _unsupported(_valid_unicode(data), NOT_YET_SUPPORTED)

    @property
    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


ERROR_TYPES: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "dlp_blocked_input": "invalid_request_error",
    "rate_limited": "rate_limit_error",
    "too_many_concurrent_requests": "rate_limit_error",
    "budget_exhausted": "insufficient_quota",
    "invalid_api_key": "invalid_request_error",
}


def error_type(code: str, status: int | None = None) -> str:
    """OpenAI's ``error.type`` for a code: explicit above, else by status (4xx: the caller's
    request; 5xx: ours)."""
    if code in ERROR_TYPES:
        return ERROR_TYPES[code]
    if status is not None and 400 <= status < 500:
        return "rate_limit_error" if status == 429 else "invalid_request_error"
    return "api_error"


def error_body(
    code: str,
    message: str,
    *,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
    param: str | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": {
            "message": message,
            "type": error_type(code, status),
            "param": param,
            "code": code,
        }
    }
    if request_id or extra:
        body["error"]["stellwerk"] = {"request_id": request_id, **(extra or {})}
    return body


def governance_summary(result: RequestResult) -> dict[str, Any]:
    """Decisions the caller may see: actions, rules, versions, route, cost — no values."""
    summary: dict[str, Any] = {"request_id": result.request_id}
    for name, decision in (("dlp_input", result.dlp_input), ("dlp_output", result.dlp_output)):
        if decision is not None:
            summary[name] = {
                "action": decision.action,
                "rule_id": decision.rule_id,
                "policy_version": decision.policy_version,
                "entities": {e.type: e.count for e in decision.entities},
            }
    if result.routing is not None:
        summary["routing"] = {
            "route": result.routing.route,
            "rule_id": result.routing.rule_id,
            "policy_version": result.routing.policy_version,
            # Issue 17: the route variant that served the request (canary or not), by name.
            **({"variant": result.routing.variant.name} if result.routing.variant else {}),
            # PTU (issue 17): served pay-as-you-go because this reserved route was full.
            **({"spillover_from": result.routing.spillover_from} if result.routing.spillover_from else {}),
        }
    if result.inference is not None:
        summary["deployment"] = result.inference.deployment
        summary["model_version"] = result.inference.model_version
    if result.cost is not None:
        summary["cost"] = {"amount": result.cost, "currency": result.currency}
    return summary


def _tool_calls(calls: list[ToolCall] | None) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in calls or ()
    ]


def _choices(result: RequestResult) -> list[GeneratedChoice]:
    """Every answer of the result, choice 0 first."""
    first = GeneratedChoice(
        index=0, content=result.content or "", finish_reason=result.finish_reason or "stop",
        tool_calls=result.tool_calls,
    )
    return [first, *result.more_choices]


def _usage(result: RequestResult) -> dict[str, int]:
    usage = result.usage
    return {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
    }


def completion_body(result: RequestResult) -> dict[str, Any]:
    choices = []
    for choice in _choices(result):
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if choice.tool_calls:
            message["tool_calls"] = _tool_calls(choice.tool_calls)
            message["content"] = choice.content or None  # OpenAI: null beside tool calls
        choices.append({"index": choice.index, "message": message, "logprobs": None,
                        "finish_reason": choice.finish_reason})
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.inference.model if result.inference else "stellwerk",
        "choices": choices,
        "usage": _usage(result),
        "stellwerk": governance_summary(result),
    }


def stream_chunks(result: RequestResult, include_usage: bool, piece_chars: int = 24) -> list[dict[str, Any]]:
    """A screened answer as chat.completion.chunk objects, for requests whose answer is
    screened whole before the caller reads it (several choices, tools, structured output)."""
    base = {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": result.inference.model if result.inference else "stellwerk",
    }

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]}

    chunks: list[dict[str, Any]] = []
    choices = _choices(result)
    for choice in choices:
        chunks.append(chunk(choice.index, {"role": "assistant", "content": ""}))
        content = choice.content
        for start in range(0, len(content), piece_chars):
            chunks.append(chunk(choice.index, {"content": content[start : start + piece_chars]}))
        chunks.extend(chunk(choice.index, {"tool_calls": [tool_call_delta(i, call)]})
                      for i, call in enumerate(choice.tool_calls or ()))
        chunks.append(chunk(choice.index, {}, choice.finish_reason))
    chunks[-1]["stellwerk"] = governance_summary(result)
    if include_usage and result.usage:
        chunks.append({**base, "choices": [], "usage": _usage(result)})
    return chunks


def tool_call_delta(index: int, call: ToolCall) -> dict[str, Any]:
    """A whole tool call as one streamed delta (OpenAI clients accumulate by ``index``)."""
    return {"index": index, "id": call.id, "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments}}


# --- The request as the mesh carries it --------------------------------------------------------


def mesh_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    """The conversation for the bus: text of every message, tool calls and tool results."""
    return [
        ChatMessage(
            role=m.role,
            content=m.text(),
            name=m.name,
            tool_calls=[
                ToolCall(id=c.id, function=FunctionCall(name=c.function.name, arguments=c.function.arguments))
                for c in m.tool_calls
            ] if m.tool_calls else None,
            tool_call_id=m.tool_call_id,
        )
        for m in body.messages
    ]


def message_texts(body: ChatCompletionRequest) -> list[str]:
    """Every text a message carries (its content and its tool calls' arguments), for limits."""
    return [m.text() + "".join(c.function.arguments for c in m.tool_calls or ()) for m in body.messages]


def mesh_params(body: ChatCompletionRequest) -> GenerationParams:
    """The generation parameters; ``user`` is set by the admission (the hashed end user)."""
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    tool_choice = body.tool_choice
    return GenerationParams(
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        n=body.n if body.n and body.n > 1 else None,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=body.logit_bias,
        tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
        tool_choice=tool_choice.model_dump() if isinstance(tool_choice, BaseModel) else tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=body.response_format.model_dump(exclude_none=True, by_alias=True)
        if body.response_format and body.response_format.type != "text" else None,
    )


# --- /v1/embeddings --------------------------------------------------------------------------

# OpenAI's own bound on inputs per embeddings request.
MAX_EMBEDDING_INPUTS: Final = 2048


class EmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings``. Text inputs only: token-id arrays are refused, because DLP
    screens text and the ids mean different words under different tokenizers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:/@+\-]{1,128}$")
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    dimensions: StrictInt | None = Field(default=None, ge=1, le=8192)
    encoding_format: Literal["float", "base64"] = "float"
    user: StrictStr | None = Field(default=None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: object) -> object:
        return _valid_unicode(data)

    @model_validator(mode="after")
    def _text_inputs(self) -> EmbeddingsRequest:
        if isinstance(self.input, list):
            if not self.input:
                raise PydanticCustomError("invalid_value", "input must not be empty", {"param": "input"})
            if len(self.input) > MAX_EMBEDDING_INPUTS:
                raise PydanticCustomError("invalid_value", "at most 2048 inputs per request", {"param": "input"})
            if not all(isinstance(item, str) for item in self.input):
                raise PydanticCustomError(
                    "unsupported_parameter", "token-id inputs cannot be screened by DLP; send text", {"param": "input"}
                )
        return self

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else [str(item) for item in self.input]


def _floats(vector: str) -> list[float]:
    raw = base64.b64decode(vector)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embeddings_body(result: RequestResult, encoding_format: str) -> dict[str, Any]:
    vectors = result.embeddings or []
    prompt_tokens = result.usage.prompt_tokens if result.usage else 0
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v if encoding_format == "base64" else _floats(v)}
            for i, v in enumerate(vectors)
        ],
        "model": result.inference.model if result.inference else "stellwerk",
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "stellwerk": governance_summary(result),
    }
