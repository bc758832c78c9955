"""Every event on the bus, typed once (DESIGN.md §4).

msgspec structs: strict decoding, fast, JSON-Schema exportable. Every event carries the
envelope; W3C trace context travels in NATS headers, not in the body.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from schemas.vocabulary import (
    ApprovalState,
    BudgetClass,
    ContextLengthBucket,
    DataSensitivity,
    Direction,
    DlpAction,
    ErrorCode,
    Ident,
    JsonType,
    Operation,
    ProviderHealth,
    QualityTier,
    ResultStatus,
    Route,
    Sha256,
    Stage,
    Timestamp,
    ToolCallStatus,
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
    # Issue 14: the person behind the caller, pseudonymous — a keyed per-tenant hash of the
    # OpenAI ``user``/``safety_identifier``, the ``X-Stellwerk-End-User`` header or the OIDC
    # subject (docs/identity.md). Never the raw id. Carried into every audit and usage event.
    end_user: Ident | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.deadline

    def remaining_s(self, now: datetime | None = None) -> float:
        return (self.deadline - (now or utcnow())).total_seconds()


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str = ""  # JSON text, as the model wrote it (screened like any text)


class ToolCall(msgspec.Struct, kw_only=True):
    """A function call the model asked for (OpenAI ``tool_calls`` item)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of the conversation. ``content`` is "" where OpenAI has null (an assistant
    turn that only calls tools); tool results are ``role: tool`` with ``tool_call_id``."""

    role: str
    content: str
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class RequestAttributes(msgspec.Struct, kw_only=True):
    data_sensitivity: DataSensitivity = "internal"
    quality_tier: QualityTier = "standard"
    context_length_bucket: ContextLengthBucket = "<8k"
    budget_class: BudgetClass = "standard"
    need_websearch: bool = False
    need_tools: bool = False
    # Issue 13: what the request needs from a route beyond chat.
    operation: Operation = "chat"
    need_json_schema: bool = False
    # The route or route class the client named in ``model`` (None for "stellwerk": the
    # policy chooses). The policy decides whether the key may have it.
    requested_model: Ident | None = None


class GenerationParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the client asked of the model beyond the messages; forwarded as OpenAI names them."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    n: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    # The end user, pseudonymous: a SHA-256 prefix of the client's ``user`` (never the raw id).
    user: Ident | None = None
    # Embeddings (operation "embeddings"): requested vector size.
    dimensions: int | None = None


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


class VariantChoice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The variant of the chosen route a request was given (issue 17: canary and shadow):
    picked by the router from a hash of the request id, so it is reproducible and audited."""

    name: Ident
    deployment: Ident | None = None  # None: the route's deployments as usual
    prompt_template: Ident | None = None  # ``<usecase>/<name>`` of the platform's prompt templates
    canary: bool = False


class RoutingDecision(msgspec.Struct, kw_only=True):
    route: Route
    rule_id: Ident
    policy_version: Ident
    fallbacks: list[Route] = msgspec.field(default_factory=list)
    prompt_tokens_estimate: int = 0
    signals: RuntimeSignals | None = None
    # Issue 17: the route's variant for this request, and the deployment it is mirrored to
    # (a shadow call whose answer never reaches the caller); both None for plain routes.
    variant: VariantChoice | None = None
    shadow: Ident | None = None
    # Issue 17 (PTU): the reserved route whose throughput was used up, so this request spilled
    # over to pay-as-you-go; None when no reserved route of the chosen class was full.
    spillover_from: Route | None = None


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
    # The caller reads the answer as it is generated (issue 12): inference streams it through
    # output screening (``response.streaming`` + ``chunk.<id>``) instead of ``response.generated``.
    stream: bool = False
    # Audit events of the stages this request has passed, not yet written: the stage that
    # ends the request writes them in one message (``AuditTrail``) before the caller sees
    # the result, instead of one stream write per stage (issue 11).
    trail: list[AuditEvent] = msgspec.field(default_factory=list)


class RequestScreened(RequestSubmitted, kw_only=True):
    dlp_input: DlpDecision
    # Placeholder → original value for reversible pseudonymisation. Lives only inside the
    # PIPELINE stream (work-queue, deleted once the next stage acks) — never audited.
    pseudonyms: dict[str, str] = msgspec.field(default_factory=dict)


class RequestRouted(RequestScreened, kw_only=True):
    routing: RoutingDecision


class GeneratedChoice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One more answer of an ``n`` > 1 request (index 1 onwards; choice 0 is the event's own)."""

    index: int
    content: str = ""
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] | None = None


class ResponseGenerated(RequestRouted, kw_only=True):
    content: str
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] | None = None
    more_choices: list[GeneratedChoice] = msgspec.field(default_factory=list)
    usage: TokenUsage
    inference: InferenceInfo
    cost: float = 0.0
    currency: Ident = "EUR"


class ResponseStreaming(RequestRouted, kw_only=True):
    """Inference opened a streamed answer: one output-DLP worker takes it and reads the
    request's chunks (``stellwerk.v1.chunk.<request_id>``) in order. Published when the
    model's first text arrives (after any fallbacks), so the call's details come with the
    last chunk."""


class StreamChunk(msgspec.Struct, kw_only=True):
    """Raw generated text of a streamed answer, in order: ``seq`` counts from 0 without gaps.
    The last chunk (``final``) carries the finish reason, the usage, the whole answer's
    SHA-256 (a lost or reordered chunk fails the stream closed) and the inference record."""

    seq: int
    text: str = ""
    final: bool = False
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    cost: float = 0.0
    sha256: Sha256 | None = None
    failed: ErrorCode | None = None  # the model call broke off mid-stream
    # Tool calls the model made, whole: screened at the end and released in one event
    # (a half-written call cannot be executed anyway).
    tool_calls: list[ToolCall] | None = None
    inference: InferenceInfo | None = None
    currency: Ident = "EUR"
    trail: list[AuditEvent] = msgspec.field(default_factory=list)


class StreamDelta(msgspec.Struct, kw_only=True):
    """Screened text for the caller (``stellwerk.v1.delta.<request_id>``). ``offset``: where
    ``text`` starts in the screened answer, so a receiver drops what it already has and
    detects gaps. An empty text is a heartbeat: the screening worker is alive."""

    offset: int
    text: str = ""


class RequestCancelled(msgspec.Struct, kw_only=True):
    """The caller of a streamed request went away (``stellwerk.v1.cancel.<request_id>``)."""

    reason: Ident = "client_disconnected"


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
    tool_calls: list[ToolCall] | None = None
    more_choices: list[GeneratedChoice] = msgspec.field(default_factory=list)
    # Embeddings requests: one vector per input, little-endian float32, base64.
    embeddings: list[str] | None = None
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
    # Issue 17: the route variant that served the call; ``shadow`` marks a mirrored call whose
    # answer went to nobody (booked like any call, reported apart).
    variant: Ident | None = None
    shadow: bool = False
    # Issue 17 (PTU): the call was served pay-as-you-go because this reserved route's
    # throughput was used up (FinOps reports the spill-over per reserved route).
    spillover_from: Route | None = None


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
    # Tool gateway (issue 7): who called which tool with which parameter *shape*, and how.
    tool: ToolAudit | None = None


class AuditTrail(msgspec.Struct, kw_only=True):
    """Audit events of one request, written at once by the stage that ended it
    (``stellwerk.v1.audit.trail.<stage>``); the audit service chains each event."""

    events: list[AuditEvent]


class AuditRecord(msgspec.Struct, kw_only=True):
    """An AuditEvent as appended to a hash chain partition by the audit service."""

    partition: Ident
    seq: int
    prev_hash: Sha256
    hash: Sha256
    event: AuditEvent
    recorded_at: Timestamp = msgspec.field(default_factory=utcnow)
    # 1: hash over the event only (walking skeleton). 2: hash over the whole record with
    # default-valued fields left out, so appending a field to the schema keeps old hashes valid.
    hash_version: int = 1


SealAlgorithm = Literal["sha256", "hmac-sha256", "ed25519"]
# A checkpoint seal: hex, 64 digits (SHA-256, HMAC-SHA256) or 128 (an Ed25519 signature).
SealValue = Annotated[str, msgspec.Meta(pattern=r"^(sha256:)?[0-9a-f]{16,128}$")]


class AuditCheckpoint(msgspec.Struct, kw_only=True):
    """A sealed statement "record ``seq`` of chain ``partition`` has hash ``head_hash``".

    Written periodically by the audit service next to the chain. ``seal`` is an Ed25519
    signature over the other fields when a signing key is configured (``seal_alg`` ed25519,
    ``key_id`` names the key pair), an HMAC-SHA256 with the older shared-secret setting
    (``seal_alg`` hmac-sha256), otherwise their plain SHA-256.
    """

    partition: Ident
    seq: int
    head_hash: Sha256
    head_stream_seq: int
    sealed_at: Timestamp = msgspec.field(default_factory=utcnow)
    sealed_by: Ident
    seal_alg: SealAlgorithm
    key_id: Ident | None = None
    seal: SealValue


class FinopsAlert(Envelope, kw_only=True):
    budget_id: Ident
    threshold_pct: float
    consumed: float
    limit: float
    currency: Ident = "EUR"
    action: Ident


class ToolCallRequested(Envelope, kw_only=True):
    """An agent asks the tool gateway to call ``server``'s ``tool`` (core NATS request-reply;
    the reply is a ``ToolCallResult``). ``user_role`` is the agent's role."""

    tool: Ident
    server: Ident
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    agent_id: Ident
    call_id: Ident = msgspec.field(default_factory=new_id)  # one request may make many calls
    user_id: Ident | None = None  # the human the agent acts for (rate limits, four eyes)
    application: Ident | None = None  # the calling application (rate limits)


class ApprovalRequested(Envelope, kw_only=True):
    approval_id: Ident
    tool: Ident
    server: Ident
    rule_id: Ident
    policy_version: Ident
    arguments_sha256: Sha256
    call_id: Ident | None = None
    agent_id: Ident | None = None
    user_id: Ident | None = None
    expires_at: Timestamp | None = None
    parameter_shape: list[ParamShape] = msgspec.field(default_factory=list)
    approvals_required: int = 1  # issue 14: 2 for four eyes (distinct approvers)


class ApprovalDecided(Envelope, kw_only=True):
    approval_id: Ident
    approved: bool
    approver: Ident  # "system" when the approval timed out
    reason: Ident | None = None  # a code such as approval_timeout or not_needed, never prose
    call_id: Ident | None = None
    state: ApprovalState | None = None  # approved, denied or expired
    approvers: list[Ident] = msgspec.field(default_factory=list)  # four eyes: every approver, in order


class ParamShape(msgspec.Struct, kw_only=True):
    """One parameter of a tool call: where it sits and its JSON type — never its value.

    ``path`` is a JSON Pointer into the arguments; ``-`` stands for the items of an array and
    ``<additional>`` for a key the tool's schema does not declare (its name may be data)."""

    path: Ident
    type: JsonType


class ToolAudit(msgspec.Struct, kw_only=True):
    """The tool-specific part of an audit event: metadata only (``AuditEvent.tool``)."""

    call_id: Ident
    agent_id: Ident
    tool: Ident
    server: Ident
    user_id: Ident | None = None
    application: Ident | None = None
    parameter_shape: list[ParamShape] = msgspec.field(default_factory=list)
    result_status: ToolCallStatus | None = None
    error_class: Ident | None = None  # an ErrorCode, or an exception type name
    schema_path: Ident | None = None  # the violated keyword's location in the tool's schema
    approval_id: Ident | None = None
    approver: Ident | None = None
    approval_wait_ms: float | None = None
    dlp_input: DlpAction | None = None
    dlp_output: DlpAction | None = None
    injection_signals: list[Ident] = msgspec.field(default_factory=list)
    result_blocks: int | None = None  # content blocks returned to the agent


class ToolContent(msgspec.Struct, kw_only=True):
    """A text block of a tool's result, as screened by DLP (other block types are dropped)."""

    type: Literal["text"] = "text"
    text: str


class ToolCallError(msgspec.Struct, kw_only=True):
    code: ErrorCode
    message: str  # a fixed sentence chosen by code, never content
    rule_id: Ident | None = None
    retry_after_s: float | None = None
    # Schema violations: where in the arguments (JSON Pointer), where in the schema, and the
    # JSON Schema keyword that failed (type, maxLength, required, additionalProperties, ...).
    instance_path: str | None = None
    schema_path: str | None = None
    keyword: Ident | None = None
    reason: Ident | None = None  # approval_denied: the approver's reason code


class ToolCallResult(Envelope, kw_only=True):
    """The tool gateway's reply to a ``ToolCallRequested``."""

    call_id: Ident
    tool: Ident
    server: Ident
    status: ToolCallStatus
    content: list[ToolContent] = msgspec.field(default_factory=list)
    structured: dict[str, Any] | None = None
    error: ToolCallError | None = None
    rule_id: Ident | None = None
    policy_version: Ident | None = None
    approval_id: Ident | None = None
    dlp_input: DlpDecision | None = None
    dlp_output: DlpDecision | None = None
    injection_signals: list[Ident] = msgspec.field(default_factory=list)
    latency_ms: float = 0.0


class ToolListRequested(msgspec.Struct, kw_only=True):
    """Which tools exist, and which of them may ``role`` (of ``tenant``) call?"""

    role: Ident | None = None
    tenant: Ident | None = None
    business_unit: Ident | None = None
    usecase_class: UsecaseClass = "chat"


class ToolInfo(msgspec.Struct, kw_only=True):
    server: Ident
    name: Ident
    description: str = ""
    read_only: bool | None = None  # the server's readOnlyHint
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    # For a role: the policy's verdict on this tool.
    allowed: bool | None = None
    approval_required: bool | None = None
    rule_id: Ident | None = None


class ToolCatalog(msgspec.Struct, kw_only=True):
    tools: list[ToolInfo]
    servers: dict[Ident, bool]  # server name -> connected
    policy_version: Ident | None = None


class ApprovalDecisionRequested(msgspec.Struct, kw_only=True):
    """A human's decision on a pending approval (core NATS request-reply to the gateway)."""

    approval_id: Ident
    approve: bool
    approver: Ident
    reason: Ident | None = None  # required to deny; a code, never prose (it is audited)
    # Issue 14: the approver's credential — an API key of the ``keys`` bucket or an OIDC token.
    # The tool gateway verifies it (role, tenant, not the requester) and records the identity
    # it proves as the approver. Core request-reply only: never stored, logged or audited.
    credential: str | None = None


class ApprovalDecisionReply(msgspec.Struct, kw_only=True):
    approval_id: Ident
    accepted: bool
    state: ApprovalState | None = None  # the approval's state after the decision
    reason: Ident | None = None  # why not accepted: not_found, already_decided, self_approval, ...
    # Issue 14: who decided, as the tool gateway established it (the credential's identity).
    approver: Ident | None = None
    approvals_missing: int = 0  # four eyes: accepted as the first approval, one more needed


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
    ToolCallResult,
    DeadLetter,
    PolicyPushed,
    AuditCheckpoint,
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
        "end_user": event.end_user,
    }


# --- DLP screening as a service (issue 11): texts outside the request path, e.g. tool calls --


class ScreenRequest(Envelope, kw_only=True):
    """Texts to screen with the DLP service's guard (core NATS request-reply on
    ``stellwerk.v1.dlp.screen``, queue group ``dlp``). All texts are screened together, as
    the messages of one request are; the envelope gives the policy its context (tenant,
    business unit, role, use case) and the deadline after which nobody waits."""

    direction: Direction
    texts: list[str]
    # Also return where each entity was found and how sure (the console's playground): spans
    # and scores, never values.
    detail: bool = False


class ScreenFinding(msgspec.Struct, kw_only=True):
    """One detected entity of a screened text: type, span, score — never its value."""

    type: Ident
    text_index: int
    start: int
    end: int
    score: float


class ScreenReply(msgspec.Struct, kw_only=True):
    """The guard's decision; ``texts`` as they may pass on (the originals for allow, redacted
    for redact, absent for block). ``error`` instead of a decision when the guard could not
    decide (``dlp_unavailable``) or the request was malformed (``invalid_request``): the
    caller refuses, fail closed."""

    decision: DlpDecision | None = None
    texts: list[str] | None = None
    error: ErrorCode | None = None
    findings: list[ScreenFinding] | None = None  # only when asked for (``detail``)
    medical_categories: list[Ident] | None = None  # only when asked for (``detail``)


EVENT_TYPES = (*EVENT_TYPES, ScreenRequest, ScreenReply)
