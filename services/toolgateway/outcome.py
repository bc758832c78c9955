"""How a tool call ended, and what the caller and the audit are told about it. Pure.

The caller gets a ``ToolCallResult`` (the screened result, or a typed refusal with a fixed
message); the audit gets an ``AuditEvent`` with a ``ToolAudit`` — the same facts minus
everything that came from the arguments or the result: shape instead of values, codes
instead of messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from schemas.events import (
    AuditEvent,
    DlpDecision,
    ParamShape,
    ToolAudit,
    ToolCallError,
    ToolCallRequested,
    ToolCallResult,
    ToolContent,
    envelope_fields,
    utcnow,
)
from schemas.vocabulary import ErrorCode, Stage, ToolCallStatus
from services.runtime.errors import MESSAGES
from services.toolgateway.validation import Violation

TOOL_MESSAGES: Final[dict[ErrorCode, str]] = {
    "tool_not_allowed": "The tool policy does not allow this tool for this role.",
    "tool_unknown": "No tool server offers this tool.",
    "tool_schema_violation": "The arguments do not match the tool's schema.",
    "tool_unavailable": "The tool server is unavailable; retry later.",
    "tool_error": "The tool reported an error.",
    "tool_result_injection": "The tool's result was withheld: it contains instructions aimed at the agent.",
    "approval_denied": "A human denied this tool call.",
    "approval_expired": "Nobody approved this tool call in time.",
}

_IDENT: Final = re.compile(r"^[A-Za-z0-9_.:@/<>=+\-]{1,128}$")


def message_for(code: ErrorCode) -> str:
    return TOOL_MESSAGES.get(code) or MESSAGES.get(code) or "The tool call failed."


def ident_or_none(value: str | None) -> str | None:
    """A schema path in the audit only if it is a plain identifier (schema keys are the
    tool author's, but an odd one must not break the audit event)."""
    return value if value and _IDENT.match(value) else None


@dataclass(slots=True)
class Outcome:
    status: ToolCallStatus
    code: ErrorCode | None = None
    rule_id: str | None = None
    policy_version: str | None = None
    retry_after_s: float | None = None
    violation: Violation | None = None
    reason: str | None = None  # approval_denied: the approver's reason code
    error_class: str | None = None  # failures: exception type or transport reason
    content: list[ToolContent] = field(default_factory=list)
    structured: dict[str, Any] | None = None
    dlp_input: DlpDecision | None = None
    dlp_output: DlpDecision | None = None
    injection_signals: list[str] = field(default_factory=list)


def refused(code: ErrorCode, rule_id: str, **details: Any) -> Outcome:
    return Outcome(status="refused", code=code, rule_id=rule_id, **details)


def failed(code: ErrorCode, error_class: str | None = None, **details: Any) -> Outcome:
    return Outcome(status="failed", code=code, error_class=error_class or code, **details)


def result_of(
    call: ToolCallRequested, outcome: Outcome, *, latency_ms: float, approval_id: str | None = None
) -> ToolCallResult:
    error = None
    if outcome.code is not None:
        violation = outcome.violation
        error = ToolCallError(
            code=outcome.code,
            message=message_for(outcome.code),
            rule_id=outcome.rule_id,
            retry_after_s=outcome.retry_after_s,
            instance_path=violation.instance_path if violation else None,
            schema_path=violation.schema_path if violation else None,
            keyword=violation.keyword if violation else None,
            reason=outcome.reason,
        )
    return ToolCallResult(
        **envelope_fields(call),
        call_id=call.call_id,
        tool=call.tool,
        server=call.server,
        status=outcome.status,
        content=outcome.content,
        structured=outcome.structured,
        error=error,
        rule_id=outcome.rule_id,
        policy_version=outcome.policy_version,
        approval_id=approval_id,
        dlp_input=outcome.dlp_input,
        dlp_output=outcome.dlp_output,
        injection_signals=outcome.injection_signals,
        latency_ms=round(latency_ms, 3),
    )


def audit_of(
    call: ToolCallRequested,
    *,
    stage: Stage,
    outcome_name: str,
    shape: list[ParamShape],
    outcome: Outcome | None = None,
    rule_id: str | None = None,
    policy_version: str | None = None,
    latency_ms: float | None = None,
    approval_id: str | None = None,
    approver: str | None = None,
    approval_wait_s: float | None = None,
) -> AuditEvent:
    dlp_input = outcome.dlp_input if outcome else None
    return AuditEvent(
        **envelope_fields(call),
        stage=stage,
        outcome=outcome_name,
        rule_id=rule_id or (outcome.rule_id if outcome else None),
        policy_version=policy_version or (outcome.policy_version if outcome else None),
        reason_code=outcome.code if outcome else None,
        data_sensitivity=dlp_input.derived_sensitivity if dlp_input else None,
        entities=dlp_input.entities if dlp_input else [],
        latency_ms=round(latency_ms, 3) if latency_ms is not None else None,
        tool=ToolAudit(
            call_id=call.call_id,
            agent_id=call.agent_id,
            tool=call.tool,
            server=call.server,
            user_id=call.user_id,
            application=call.application,
            parameter_shape=shape,
            result_status=outcome.status if outcome else None,
            error_class=ident_or_none(outcome.error_class) if outcome else None,
            schema_path=ident_or_none(outcome.violation.schema_path) if outcome and outcome.violation else None,
            approval_id=approval_id,
            approver=approver,
            approval_wait_ms=round(approval_wait_s * 1000, 1) if approval_wait_s is not None else None,
            dlp_input=dlp_input.action if dlp_input else None,
            dlp_output=outcome.dlp_output.action if outcome and outcome.dlp_output else None,
            injection_signals=outcome.injection_signals if outcome else [],
            result_blocks=len(outcome.content) if outcome and outcome.status != "refused" else None,
        ),
    )


_AT_PATH: Final = re.compile(r"at `(\$[^`]*)`")


def malformed(detail: str) -> ToolCallResult:
    """The reply to a request that does not decode as ``ToolCallRequested``. Its envelope is
    unknown, so placeholders stand in; the decoder's message names a field path and a type,
    never a value, and only the path is passed on."""
    found = _AT_PATH.search(detail)
    return ToolCallResult(
        request_id="invalid",
        correlation_id="invalid",
        deadline=utcnow(),
        tenant="unknown",
        business_unit="unknown",
        user_role="unknown",
        usecase_class="chat",
        call_id="invalid",
        tool="unknown",
        server="unknown",
        status="refused",
        error=ToolCallError(
            code="invalid_request",
            message=message_for("invalid_request"),
            instance_path=found.group(1) if found else None,
        ),
    )
