"""Inference handlers: the outcome of a model call in, effects out (no I/O)."""

from __future__ import annotations

from schemas import subjects
from schemas.events import (
    AuditEvent,
    InferenceInfo,
    RequestResult,
    RequestRouted,
    ResponseGenerated,
    ResponseStreaming,
    TokenUsage,
    UsageRecorded,
    envelope_fields,
)
from services.inference.engine import AttemptFailure, CallOutcome, InferenceFailed
from services.runtime.effects import Effects, Fail, Publish, Record, Reply


def attempt_audit(event: RequestRouted, attempt: AttemptFailure, index: int) -> AuditEvent:
    return AuditEvent(
        **envelope_fields(event),
        stage="inference",
        outcome=f"attempt_failed.{index}",
        reason_code=attempt.code,
        route=attempt.route,
        deployment=attempt.deployment,
        attributes={"error_type": attempt.error_type},
    )


def failure_records(event: RequestRouted, failure: InferenceFailed) -> list[AuditEvent]:
    """Every failed attempt, then the failure itself."""
    attempts = [attempt_audit(event, a, i) for i, a in enumerate(failure.attempts, 1)]
    failed = AuditEvent(**envelope_fields(event), stage="inference", outcome="failed", reason_code=failure.code)
    return [*attempts, failed]


def call_failed(event: RequestRouted, failure: InferenceFailed) -> Effects:
    return [
        Fail(
            failure.code,
            "inference",
            audits=failure_records(event, failure),
            result_fields={"routing": event.routing, "dlp_input": event.dlp_input},
        )
    ]


def call_records(event: RequestRouted, outcome: CallOutcome, currency: str, template_version: str | None = None
                 ) -> tuple[list[AuditEvent], InferenceInfo, UsageRecorded, TokenUsage]:
    """What a completed call leaves behind: its records (failed attempts, then the call),
    its details, its usage event. ``template_version``: the platform prompt template injected
    (``<usecase>/<name>@<sha>``, issue 17); otherwise the deployment's configured label."""
    deployment = outcome.deployment
    prompt_template_version = template_version or deployment.prompt_template_version
    variant = event.routing.variant
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
        prompt_template_version=prompt_template_version,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        ttft_ms=round(outcome.ttft_ms, 3) if outcome.ttft_ms is not None else None,
        latency_ms=round(outcome.latency_ms, 3),
        cost=outcome.cost,
        attributes={
            **({"fallback_from": outcome.fallback_from} if outcome.fallback_from else {}),
            **({"structured_output": "reasked"} if outcome.reasked else {}),
            **({"tool_calls": str(len(outcome.tool_calls))} if outcome.tool_calls else {}),
            **({"choices": str(1 + len(outcome.more_choices))} if outcome.more_choices else {}),
            **({"variant": variant.name} if variant else {}),
            **({"canary": "true"} if variant and variant.canary else {}),
        },
    )
    attempts = [attempt_audit(event, a, i) for i, a in enumerate(outcome.failed_attempts, 1)]
    info = InferenceInfo(
        route=outcome.route,
        deployment=deployment.name,
        model=deployment.model,
        model_version=deployment.model_version,
        config_version=deployment.config_version,
        prompt_template_version=prompt_template_version,
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
        variant=variant.name if variant else None,
        # PTU (issue 17): served pay-as-you-go because the reserved route was full — on the
        # route the router chose for that reason (not on a later fallback of it).
        spillover_from=event.routing.spillover_from if outcome.route == event.routing.route else None,
    )
    return [*attempts, completed], info, recorded, usage


def usage_effect(recorded: UsageRecorded) -> Publish:
    return Publish(subjects.USAGE_RECORDED, recorded, f"usage:{recorded.call_id}")


def call_completed(event: RequestRouted, outcome: CallOutcome, currency: str,
                   template_version: str | None = None) -> Effects:
    """Usage to FinOps (idempotent by call id) and the answer, with the call on the trail, to
    output screening."""
    records, info, recorded, usage = call_records(event, outcome, currency, template_version)
    generated = ResponseGenerated(
        **envelope_fields(event),
        messages=[],  # output screening reads the answer, not the prompt
        attributes=event.attributes,
        params=event.params,
        pseudonymize=event.pseudonymize,
        trail=[*event.trail, *records],
        dlp_input=event.dlp_input,
        pseudonyms=event.pseudonyms,
        routing=event.routing,
        content=outcome.content,
        finish_reason=outcome.finish_reason,
        tool_calls=outcome.tool_calls,
        more_choices=list(outcome.more_choices),
        usage=usage,
        inference=info,
        cost=outcome.cost,
        currency=currency,
    )
    return [usage_effect(recorded), Publish(subjects.RESPONSE_GENERATED, generated, f"{event.request_id}:generated")]


def streaming_of(event: RequestRouted) -> ResponseStreaming:
    """The opening of a streamed answer: everything output screening needs but the text."""
    return ResponseStreaming(
        **envelope_fields(event),
        messages=[],  # the prompt is not needed to screen the answer: it stays out of the stream
        attributes=event.attributes,
        params=event.params,
        pseudonymize=event.pseudonymize,
        stream=True,
        trail=event.trail,
        dlp_input=event.dlp_input,
        pseudonyms=event.pseudonyms,
        routing=event.routing,
    )


def embeddings_completed(event: RequestRouted, outcome: CallOutcome, currency: str) -> Effects:
    """Embeddings end at inference: vectors are no text output DLP could screen (their input
    was screened), so the trail is written and the caller answered here."""
    records, info, recorded, usage = call_records(event, outcome, currency)
    result = RequestResult(
        **envelope_fields(event),
        status="ok",
        embeddings=list(outcome.embeddings),
        dlp_input=event.dlp_input,
        routing=event.routing,
        inference=info,
        usage=usage,
        cost=outcome.cost,
        currency=currency,
    )
    return [usage_effect(recorded), Record([*event.trail, *records]), Reply(result)]
