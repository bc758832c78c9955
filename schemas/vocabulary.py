"""The platform's shared vocabulary (DESIGN.md §4). Literal types export cleanly to JSON Schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, get_args

import msgspec

DataSensitivity = Literal["public", "internal", "confidential", "highly_confidential"]
UsecaseClass = Literal["chat", "summarization", "extraction", "coding", "decision_support", "ticket_triage"]
QualityTier = Literal["standard", "high"]
ContextLengthBucket = Literal["<8k", "8-32k", ">32k"]
BudgetClass = Literal["low", "standard", "premium"]
Direction = Literal["input", "output"]
DlpAction = Literal["allow", "redact", "block"]
# Routes are data (issue 13): the config declares them, with their class, locality and
# capabilities; "fallback-policy" is the policy's refusal, never a configured route.
Route = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._\-]{0,63}$")]
FALLBACK_ROUTE: Final = "fallback-policy"
# What a request asks a route to do (issue 13): the OpenAI endpoint it came in on.
Operation = Literal["chat", "embeddings"]
# What a route can do; the routing policy only chooses routes whose capabilities cover the
# request's needs.
Capability = Literal["chat", "tools", "json_schema", "vision", "embeddings"]
Locality = Literal["local", "external"]
ResultStatus = Literal["ok", "blocked", "failed"]
ProviderHealth = Literal["healthy", "degraded", "down"]
# Tool gateway (issue 7): how a tool call ended, the JSON type of a parameter (audited as
# the call's shape instead of its values), and the life of a human approval.
ToolCallStatus = Literal["ok", "refused", "failed"]
JsonType = Literal["string", "integer", "number", "boolean", "null", "object", "array"]
ApprovalState = Literal["pending", "approved", "denied", "expired", "completed", "failed"]

Stage = Literal[
    "gateway",
    "dlp_input",
    "router",
    "inference",
    "dlp_output",
    "guard",  # issue 16: guardrail decisions (injection, topics, moderation), a layer of the DLP service
    "finops",
    "toolgateway",
    "approval",
    "audit",
    "client",
    "identity",  # issue 14: API key changes by operators (``stellwerk keys``) and their bootstrap import
    "policy",  # issue 17: policy bundle pushes and rollbacks by operators (``stellwerk policy``)
]

# Machine-readable reason codes. Error bodies and audit records carry these, never free text
# derived from content.
ErrorCode = Literal[
    "dlp_blocked_input",
    "dlp_blocked_output",
    "dlp_unavailable",
    "policy_unavailable",
    "no_route_available",
    "budget_exhausted",
    "deadline_exceeded",
    "provider_error",
    "provider_timeout",
    "rate_limited",
    "invalid_request",
    "internal_error",
    # Recovery (issue 19): the gateway has lost its NATS connection; retry after Retry-After.
    "bus_unavailable",
    # Streaming (issue 12): chunks lost, reordered or stopped arriving mid-stream.
    "stream_interrupted",
    "client_disconnected",
    # Tool gateway (issue 7).
    "tool_not_allowed",
    "tool_unknown",
    "tool_schema_violation",
    "tool_unavailable",
    "tool_error",
    "tool_result_injection",
    "approval_denied",
    "approval_expired",
    # OpenAI surface (issue 13).
    "route_not_allowed",  # the request named a route the policy does not allow it (403)
    "output_schema_violation",  # the model's answer did not match response_format, even re-asked
    "unsupported_by_route",  # the chosen route cannot honour a parameter the request set
    # Guardrails (issue 16).
    "guard_blocked_input",  # prompt injection / jailbreak or a denied topic (400)
    "guard_blocked_output",  # output moderation withheld the answer (422; streamed: content_filter)
    "guard_unavailable",  # a detector or the guardrail policy failed: refused, fail closed (503)
]

SENSITIVITY_ORDER: Final[tuple[DataSensitivity, ...]] = get_args(DataSensitivity)
CONTEXT_BUCKETS: Final[tuple[ContextLengthBucket, ...]] = get_args(ContextLengthBucket)

# Identifiers in audit-grade events: no whitespace, bounded — a field typed this way cannot
# carry a sentence of prompt text.
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:@/<>=+\-]{1,128}$")]
# Timestamps must carry a timezone: deadlines are compared across machines.
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^(sha256:)?[0-9a-f]{16,64}$")]


def max_sensitivity(*levels: DataSensitivity) -> DataSensitivity:
    """The strictest of the given levels: callers may raise sensitivity, never lower it."""
    return max(levels, key=SENSITIVITY_ORDER.index)
