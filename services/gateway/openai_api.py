"""The OpenAI wire format the gateway speaks (requests in, completions and errors out)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import RequestResult
from schemas.vocabulary import ErrorCode


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class InboundMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None  # advisory only: the routing policy chooses the model
    messages: list[InboundMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    metadata: dict[str, Any] | None = None


ERROR_TYPES: dict[ErrorCode, str] = {
    "invalid_request": "invalid_request_error",
    "dlp_blocked_input": "invalid_request_error",
    "rate_limited": "rate_limit_error",
    "budget_exhausted": "insufficient_quota",
}


def error_body(
    code: str, message: str, *, request_id: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(code, "api_error"),  # type: ignore[call-overload]
            "param": None,
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
