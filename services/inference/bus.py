"""Inference worker contract.

consumes  stellwerk.v1.request.routed      (durable ``inference``)
publishes stellwerk.v1.response.generated  (to dlp output screening)
          stellwerk.v1.usage.recorded      (to finops; one per call, idempotent by call id)
          stellwerk.v1.result.<id>         (failure: provider error/timeout, typed)
          stellwerk.v1.audit.inference
"""

from __future__ import annotations

import asyncio

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
from schemas.streams import INFERENCE
from services.inference.engine import InferenceEngine, InferenceFailed
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    engine = InferenceEngine(worker.config)
    currency = worker.config.currency

    async def on_routed(event: RequestRouted) -> None:
        try:
            outcome = await engine.run(
                event.routing, event.messages, event.params, timeout_s=event.remaining_s()
            )
        except InferenceFailed as failure:
            await worker.fail(event, failure.code, stage="inference", routing=event.routing)
            return
        info = InferenceInfo(
            route=outcome.route,
            deployment=outcome.deployment.name,
            model=outcome.deployment.model,
            model_version=outcome.deployment.model_version,
            config_version=outcome.deployment.config_version,
            prompt_template_version=outcome.deployment.prompt_template_version,
            ttft_ms=outcome.ttft_ms,
            latency_ms=outcome.latency_ms,
            fallback_from=outcome.fallback_from,
        )
        usage = TokenUsage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens)
        call_id = f"{event.request_id}.{outcome.route}"
        envelope = envelope_fields(event)
        # The three publishes are independent: send them together, wait once.
        await asyncio.gather(
            worker.publish(
                subjects.USAGE_RECORDED,
                UsageRecorded(
                    **envelope,
                    call_id=call_id,
                    route=outcome.route,
                    deployment=outcome.deployment.name,
                    model=outcome.deployment.model,
                    usage=usage,
                    ttft_ms=outcome.ttft_ms,
                    latency_ms=outcome.latency_ms,
                    gpu_seconds=outcome.gpu_seconds,
                    cost=outcome.cost,
                    currency=currency,
                ),
                msg_id=f"usage:{call_id}",
            ),
            worker.audit(
                AuditEvent(
                    **envelope,
                    stage="inference",
                    outcome="fallback" if outcome.fallback_from else "completed",
                    route=outcome.route,
                    deployment=outcome.deployment.name,
                    model=outcome.deployment.model,
                    model_version=outcome.deployment.model_version,
                    config_version=outcome.deployment.config_version,
                    prompt_template_version=outcome.deployment.prompt_template_version,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    ttft_ms=round(outcome.ttft_ms, 3) if outcome.ttft_ms is not None else None,
                    latency_ms=round(outcome.latency_ms, 3),
                    cost=outcome.cost,
                )
            ),
            worker.publish(
                subjects.RESPONSE_GENERATED,
                ResponseGenerated(
                    **envelope,
                    messages=event.messages,
                    attributes=event.attributes,
                    params=event.params,
                    pseudonymize=event.pseudonymize,
                    dlp_input=event.dlp_input,
                    pseudonyms=event.pseudonyms,
                    routing=event.routing,
                    content=outcome.content,
                    finish_reason=outcome.finish_reason,
                    usage=usage,
                    inference=info,
                    cost=outcome.cost,
                    currency=currency,
                ),
                msg_id=f"{event.request_id}:generated",
            ),
        )

    worker.consume(INFERENCE, RequestRouted, on_routed)
