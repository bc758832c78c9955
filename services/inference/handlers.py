"""Inference handlers: the outcome of a model call in, effects out (no I/O)."""

from __future__ import annotations

from schemas import subjects
from schemas.events import (
    AuditEvent,
    InferenceInfo,
    RequestRouted,
    ResponseGenerated,
    TokenUsage,
    UsageRecorded,
    envelope_fields,
)
from services.inference.engine import AttemptFailure, CallOutcome, InferenceFailed
from services.runtime.effects import Effects, Fail, Publish


def attempt_audit(event: RequestRouted, attempt: AttemptFailure, index: int) -> AuditEvent:
    return AuditEvent(
        **envelope_fields(event),
        stage="inference",
        outcome=f"attempt_failed.{index}",
        reason_code=attempt.code,
        route=attempt.route,
        attributes={"error_type": attempt.error_type},
    )


def call_failed(event: RequestRouted, failure: InferenceFailed) -> Effects:
    """Every failed attempt is on the trail, then the failure itself."""
    attempts = [attempt_audit(event, a, i) for i, a in enumerate(failure.attempts, 1)]
    failed = AuditEvent(**envelope_fields(event), stage="inference", outcome="failed", reason_code=failure.code)
    return [
        Fail(
            failure.code,
            "inference",
            audits=[*attempts, failed],
            result_fields={"routing": event.routing, "dlp_input": event.dlp_input},
        )
    ]


def call_completed(event: RequestRouted, outcome: CallOutcome, currency: str) -> Effects:
    """Usage to FinOps (idempotent by call id) and the answer, with the call on the trail, to
    output screening."""
    deployment = outcome.deployment
    usage = TokenUsage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens)
    call_id = f"{event.request_id}.{outcome.route}"
    envelope = envelope_fields(event)
    completed = AuditEvent(
        **envelope,
        stage="inference",
        outcome="fallback" if outcome.fallback_from else "completed",
        route=outcome.route,
        fallbacks=[outcome.fallback_from] if outcome.fallback_from else [],
        deployment=deployment.name,
        model=deployment.model,
        model_version=deployment.model_version,
        config_version=deployment.config_version,
        prompt_template_version=deployment.prompt_template_version,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        ttft_ms=round(outcome.ttft_ms, 3) if outcome.ttft_ms is not None else None,
        latency_ms=round(outcome.latency_ms, 3),
        cost=outcome.cost,
        attributes={"fallback_from": outcome.fallback_from} if outcome.fallback_from else {},
    )
    attempts = [attempt_audit(event, a, i) for i, a in enumerate(outcome.failed_attempts, 1)]
    info = InferenceInfo(
        route=outcome.route,
        deployment=deployment.name,
        model=deployment.model,
        model_version=deployment.model_version,
        config_version=deployment.config_version,
        prompt_template_version=deployment.prompt_template_version,
        ttft_ms=outcome.ttft_ms,
        latency_ms=outcome.latency_ms,
        fallback_from=outcome.fallback_from,
    )
    recorded = UsageRecorded(
        **envelope,
        call_id=call_id,
        route=outcome.route,
        deployment=deployment.name,
        model=deployment.model,
        usage=usage,
        ttft_ms=outcome.ttft_ms,
        latency_ms=outcome.latency_ms,
        gpu_seconds=outcome.gpu_seconds,
        cost=outcome.cost,
        currency=currency,
    )
    generated = ResponseGenerated(
        **envelope,
        messages=event.messages,
        attributes=event.attributes,
        params=event.params,
        pseudonymize=event.pseudonymize,
        trail=[*event.trail, *attempts, completed],
        dlp_input=event.dlp_input,
        pseudonyms=event.pseudonyms,
        routing=event.routing,
        content=outcome.content,
        finish_reason=outcome.finish_reason,
        usage=usage,
        inference=info,
        cost=outcome.cost,
        currency=currency,
    )
    return [
        Publish(subjects.USAGE_RECORDED, recorded, f"usage:{call_id}"),
        Publish(subjects.RESPONSE_GENERATED, generated, f"{event.request_id}:generated"),
    ]
