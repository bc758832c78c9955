"""Every event on the bus, typed once (DESIGN.md §4).

msgspec structs: strict decoding, fast, JSON-Schema exportable. Every event carries the
envelope; W3C trace context travels in NATS headers, not in the body.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from schemas.vocabulary import (
    BudgetClass,
    ContextLengthBucket,
    DataSensitivity,
    Direction,
    DlpAction,
    ErrorCode,
    Ident,
    ProviderHealth,
    QualityTier,
    ResultStatus,
    Route,
    Sha256,
    Stage,
    Timestamp,
    UsecaseClass,
)


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(msgspec.Struct, kw_only=True):
    event_id: Ident = msgspec.field(default_factory=new_id)
    request_id: Ident
    correlation_id: Ident
    occurred_at: Timestamp = msgspec.field(default_factory=utcnow)
    deadline: Timestamp
    tenant: Ident
    business_unit: Ident
    user_role: Ident
    usecase_class: UsecaseClass

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.deadline

    def remaining_s(self, now: datetime | None = None) -> float:
        return (self.deadline - (now or utcnow())).total_seconds()


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str


class RequestAttributes(msgspec.Struct, kw_only=True):
    data_sensitivity: DataSensitivity = "internal"
    quality_tier: QualityTier = "standard"
    context_length_bucket: ContextLengthBucket = "<8k"
    budget_class: BudgetClass = "standard"
    need_websearch: bool = False
    need_tools: bool = False


class GenerationParams(msgspec.Struct, kw_only=True):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None


class EntityCount(msgspec.Struct, kw_only=True):
    type: Ident
    count: int


class DlpDecision(msgspec.Struct, kw_only=True):
    """What the DLP guard decided about one text: metadata only, never the values."""

    direction: Direction
    action: DlpAction
    rule_id: Ident
    policy_version: Ident
    language: Ident
    derived_sensitivity: DataSensitivity
    has_pii: bool
    has_medical_terms: bool
    medical_term_density: float = 0.0
    entities: list[EntityCount] = msgspec.field(default_factory=list)
    pseudonymized: bool = False


class RoutingDecision(msgspec.Struct, kw_only=True):
    route: Route
    rule_id: Ident
    policy_version: Ident
    fallbacks: list[Route] = msgspec.field(default_factory=list)
    prompt_tokens_estimate: int = 0
    signals: RuntimeSignals | None = None


class RuntimeSignals(msgspec.Struct, kw_only=True):
    local_capacity_ok: bool = True
    api_quota_remaining: float = 1e12
    provider_health: dict[str, ProviderHealth] = msgspec.field(default_factory=dict)
    budget_exhausted: bool = False
    # FinOps actions in force for the request's budgets: downgrade, block_noncritical.
    budget_actions: list[Ident] = msgspec.field(default_factory=list)


class InferenceInfo(msgspec.Struct, kw_only=True):
    route: Route
    deployment: Ident
    model: Ident
    model_version: Ident
    config_version: Ident
    prompt_template_version: Ident
    ttft_ms: float | None  # measured on streamed calls only (deployment setting ``stream``)
    latency_ms: float
    fallback_from: Route | None = None


class TokenUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class RequestSubmitted(Envelope, kw_only=True):
    messages: list[ChatMessage]
    attributes: RequestAttributes = msgspec.field(default_factory=RequestAttributes)
    params: GenerationParams = msgspec.field(default_factory=GenerationParams)
    pseudonymize: bool = False


class RequestScreened(RequestSubmitted, kw_only=True):
    dlp_input: DlpDecision
    # Placeholder → original value for reversible pseudonymisation. Lives only inside the
    # PIPELINE stream (work-queue, deleted once the next stage acks) — never audited.
    pseudonyms: dict[str, str] = msgspec.field(default_factory=dict)


class RequestRouted(RequestScreened, kw_only=True):
    routing: RoutingDecision


class ResponseGenerated(RequestRouted, kw_only=True):
    content: str
    finish_reason: str = "stop"
    usage: TokenUsage
    inference: InferenceInfo
    cost: float = 0.0
    currency: Ident = "EUR"


class ResultError(msgspec.Struct, kw_only=True):
    code: ErrorCode
    stage: Stage
    message: str  # a fixed sentence chosen by code, never content
    retry_after_s: float | None = None
    rule_id: Ident | None = None


class RequestResult(Envelope, kw_only=True):
    status: ResultStatus
    content: str | None = None
    finish_reason: str | None = None
    error: ResultError | None = None
    dlp_input: DlpDecision | None = None
    routing: RoutingDecision | None = None
    dlp_output: DlpDecision | None = None
    inference: InferenceInfo | None = None
    usage: TokenUsage | None = None
    cost: float | None = None
    currency: Ident | None = None


class UsageRecorded(Envelope, kw_only=True):
    call_id: Ident
    route: Route
    deployment: Ident
    model: Ident
    usage: TokenUsage
    ttft_ms: float | None
    latency_ms: float
    gpu_seconds: float = 0.0
    cost: float
    currency: Ident = "EUR"


class AuditEvent(Envelope, kw_only=True):
    """Metadata-only record of one decision. No free-text field: ids, enums, numbers, hashes."""

    stage: Stage
    outcome: Ident  # e.g. received, allow, redact, block, routed, completed, failed
    rule_id: Ident | None = None
    policy_version: Ident | None = None
    reason_code: ErrorCode | None = None
    data_sensitivity: DataSensitivity | None = None
    entities: list[EntityCount] = msgspec.field(default_factory=list)
    route: Route | None = None
    fallbacks: list[Route] = msgspec.field(default_factory=list)
    deployment: Ident | None = None
    model: Ident | None = None
    model_version: Ident | None = None
    config_version: Ident | None = None
    prompt_template_version: Ident | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    cost: float | None = None
    attributes: dict[Ident, Ident] = msgspec.field(default_factory=dict)
    content_sha256: Sha256 | None = None


class AuditRecord(msgspec.Struct, kw_only=True):
    """An AuditEvent as appended to a hash chain partition by the audit service."""

    partition: Ident
    seq: int
    prev_hash: Sha256
    hash: Sha256
    event: AuditEvent
    recorded_at: Timestamp = msgspec.field(default_factory=utcnow)


class FinopsAlert(Envelope, kw_only=True):
    budget_id: Ident
    threshold_pct: float
    consumed: float
    limit: float
    currency: Ident = "EUR"
    action: Ident


class ToolCallRequested(Envelope, kw_only=True):
    tool: Ident
    server: Ident
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    agent_id: Ident


class ApprovalRequested(Envelope, kw_only=True):
    approval_id: Ident
    tool: Ident
    server: Ident
    rule_id: Ident
    policy_version: Ident
    arguments_sha256: Sha256


class ApprovalDecided(Envelope, kw_only=True):
    approval_id: Ident
    approved: bool
    approver: Ident


class DeadLetter(msgspec.Struct, kw_only=True):
    """A message a service could not process: the original bytes plus a typed reason."""

    service: Ident
    subject: str
    reason: Ident  # malformed, max_deliver_exceeded, ...
    detail: str  # decoder or exception *type* message; never message content
    deliveries: int
    payload: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    occurred_at: Timestamp = msgspec.field(default_factory=utcnow)


class PolicyPushed(msgspec.Struct, kw_only=True):
    """A policy bundle pushed at run time (``stellwerk policy push``) to every worker using it."""

    policy: Ident  # e.g. "routing"
    version: Ident
    modules: dict[str, str]
    data: dict[str, Any]
    pushed_at: Timestamp = msgspec.field(default_factory=utcnow)


class PolicyPushAck(msgspec.Struct, kw_only=True):
    worker_id: Ident
    accepted: bool
    version: Ident  # the version in force after the push


EVENT_TYPES: tuple[type[msgspec.Struct], ...] = (
    RequestSubmitted,
    RequestScreened,
    RequestRouted,
    ResponseGenerated,
    RequestResult,
    UsageRecorded,
    AuditEvent,
    AuditRecord,
    FinopsAlert,
    ToolCallRequested,
    ApprovalRequested,
    ApprovalDecided,
    DeadLetter,
    PolicyPushed,
)

E = TypeVar("E", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def encode(event: msgspec.Struct) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes, type_: type[E]) -> E:
    return msgspec.json.decode(data, type=type_)


def deadline_in(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def envelope_fields(event: Envelope) -> dict[str, Any]:
    """The envelope of an event, to carry into the next event of the same request."""
    return {
        "request_id": event.request_id,
        "correlation_id": event.correlation_id,
        "deadline": event.deadline,
        "tenant": event.tenant,
        "business_unit": event.business_unit,
        "user_role": event.user_role,
        "usecase_class": event.usecase_class,
    }
