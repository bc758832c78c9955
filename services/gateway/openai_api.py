"""The OpenAI wire format the gateway speaks (requests in, completions and errors out)."""

from __future__ import annotations

import time
from typing import Any, Final, Literal

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

from schemas.events import RequestResult
from services.gateway.limits import lone_surrogate_path, param_path

# --- What the mesh does not carry yet (issue 13) ---------------------------------------------
# OpenAI chat parameters the mesh cannot honour yet. A request that sets one gets a 400
# ``unsupported_parameter`` naming it — never a silent drop. The values listed are OpenAI's
# defaults: sending them changes nothing, so they are accepted (clients that always send
# ``n: 1`` or ``frequency_penalty: 0`` keep working). Delete an entry when the mesh carries
# the parameter and declare it as a field of the model below.
NOT_YET_SUPPORTED: Final[dict[str, tuple[object, ...]]] = {
    "tools": ([],),
    "tool_choice": ("none",),
    "parallel_tool_calls": (True,),
    "functions": ([],),
    "function_call": ("none",),
    "response_format": ({"type": "text"},),
    "n": (1,),
    "seed": (),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
    "audio": (),
    "modalities": (["text"],),
    "prediction": (),
    "reasoning_effort": (),
    "verbosity": (),
    "web_search_options": (),
    "service_tier": ("auto", "default"),
    "store": (False,),
    "prompt_cache_key": (),
    "safety_identifier": (),
}
# The same for fields of a message (assistant tool calls, tool results, names).
MESSAGE_NOT_YET_SUPPORTED: Final[dict[str, tuple[object, ...]]] = {
    "tool_calls": ([],),
    "tool_call_id": (),
    "function_call": (),
    "name": (),
    "refusal": (),
    "audio": (),
}
# Roles and content-part types the mesh does not carry yet (tool results; images, audio and
# files, which DLP cannot screen: refused, fail closed).
ROLES_NOT_YET_SUPPORTED: Final = frozenset({"tool", "function"})
PARTS_NOT_YET_SUPPORTED: Final = frozenset({"image_url", "input_audio", "file", "refusal"})


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


class InboundMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr | list[ContentPart] | None = None

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
    # The end user's id, which OpenAI-compatible clients (Open WebUI, LangChain) send on every
    # request. Accepted, not yet recorded: it reaches no event, log or audit record until the
    # identity work hashes it into the audit trail (issue 13); docs/openai.md says so.
    user: StrictStr | None = Field(default=None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: object) -> object:
        where = lone_surrogate_path(data)
        if where is not None:
            raise PydanticCustomError(
                "invalid_unicode", "a string contains an unpaired UTF-16 surrogate", {"param": param_path(where)}
            )
        return _unsupported(data, NOT_YET_SUPPORTED)

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
        }
    if result.inference is not None:
        summary["deployment"] = result.inference.deployment
        summary["model_version"] = result.inference.model_version
    if result.cost is not None:
        summary["cost"] = {"amount": result.cost, "currency": result.currency}
    return summary


def completion_body(result: RequestResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.inference.model if result.inference else "stellwerk",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content or ""},
                "finish_reason": result.finish_reason or "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        },
        "stellwerk": governance_summary(result),
    }


def stream_chunks(result: RequestResult, include_usage: bool, piece_chars: int = 24) -> list[dict[str, Any]]:
    """The screened answer as chat.completion.chunk objects (streamed after output screening)."""
    base = {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": result.inference.model if result.inference else "stellwerk",
    }
    content = result.content or ""
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    for start in range(0, len(content), piece_chars):
        piece = content[start : start + piece_chars]
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": result.finish_reason or "stop"}],
         "stellwerk": governance_summary(result)}
    )
    if include_usage and result.usage:
        chunks.append(
            {**base, "choices": [], "usage": {
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
                "total_tokens": result.usage.total_tokens,
            }}
        )
    return chunks
