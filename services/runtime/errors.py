"""Fixed, content-free error sentences per error code (what callers and audit see)."""

from __future__ import annotations

from typing import Final

from schemas.vocabulary import ErrorCode

MESSAGES: Final[dict[ErrorCode, str]] = {
    "dlp_blocked_input": "The request was blocked by the data protection policy.",
    "dlp_blocked_output": "The model's answer was withheld by the data protection policy.",
    "dlp_unavailable": "The data protection guard could not screen the request; it was refused.",
    "policy_unavailable": "The routing policy could not decide; the request was refused.",
    "no_route_available": "No model route may serve this request right now; retry later.",
    "budget_exhausted": "The budget for this request is exhausted.",
    "deadline_exceeded": "The request's deadline passed before it completed.",
    "provider_error": "The model provider failed to answer.",
    "provider_timeout": "The model provider did not answer in time.",
    "rate_limited": "Rate limit exceeded; retry after the indicated time.",
    "invalid_request": "The request is invalid.",
    "internal_error": "The platform failed to process the request.",
    "bus_unavailable": "The gateway has lost its connection to the message bus; retry shortly.",
    "stream_interrupted": "The answer's stream was interrupted; it was ended to keep it screened.",
    "client_disconnected": "The caller went away before the answer was complete; the model call was stopped.",
    "tool_not_allowed": "The tool policy does not allow this tool for this caller.",
    "tool_unknown": "No tool server offers this tool.",
    "tool_schema_violation": "The tool arguments do not match the tool's schema.",
    "tool_unavailable": "The tool server could not be reached.",
    "tool_error": "The tool failed.",
    "tool_result_injection": "The tool result was withheld: it looks like a prompt injection.",
    "approval_denied": "A human denied this tool call.",
    "approval_expired": "Nobody approved this tool call in time.",
    "route_not_allowed": "The routing policy does not allow this request on the model it names.",
    "output_schema_violation": "The model's answer did not match the requested response_format, "
    "also when asked again.",
    "unsupported_by_route": "The chosen model route cannot honour a parameter of this request.",
    "guard_blocked_input": "The request was refused by the guardrail policy.",
    "guard_blocked_output": "The model's answer was withheld by the guardrail policy.",
    "guard_unavailable": "The guardrails could not check the request; it was refused.",
}

HTTP_STATUS: Final[dict[ErrorCode, int]] = {
    "dlp_blocked_input": 400,
    "dlp_blocked_output": 422,
    "dlp_unavailable": 503,
    "policy_unavailable": 503,
    "no_route_available": 503,
    "budget_exhausted": 429,
    "deadline_exceeded": 504,
    "provider_error": 502,
    "provider_timeout": 504,
    "rate_limited": 429,
    "invalid_request": 400,
    "internal_error": 500,
    "bus_unavailable": 503,
    "stream_interrupted": 502,
    "client_disconnected": 499,
    "tool_not_allowed": 403,
    "tool_unknown": 404,
    "tool_schema_violation": 400,
    "tool_unavailable": 503,
    "tool_error": 502,
    "tool_result_injection": 422,
    "approval_denied": 403,
    "approval_expired": 408,
    "route_not_allowed": 403,
    "output_schema_violation": 502,
    "unsupported_by_route": 400,
    "guard_blocked_input": 400,
    "guard_blocked_output": 422,
    "guard_unavailable": 503,
}


def fixed_message(code: ErrorCode) -> str:
    return MESSAGES[code]
