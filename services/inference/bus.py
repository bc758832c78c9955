"""Inference worker contract.

consumes  stellwerk.v1.request.routed      (durable ``inference``)
publishes stellwerk.v1.response.generated  (to dlp output screening)
          stellwerk.v1.usage.recorded      (to finops; one per call, idempotent by call id)
          stellwerk.v1.result.<id>         (failure: provider error/timeout, typed)
          stellwerk.v1.audit.inference     (the call; and one record per failed attempt)
writes    KV provider_health <route>.<worker>   (circuit breaker state, on change + heartbeat)
          KV capacity <deployment>              (from each local deployment's /metrics)
          KV capacity quota.<route>             (tokens used in the current quota window)
"""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec

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
from schemas.kv import ProviderHealthState, QuotaState
from schemas.streams import INFERENCE, KV_CAPACITY, KV_PROVIDER_HEALTH
from schemas.vocabulary import Route
from services.inference.capacity import capacity_from_metrics, metrics_url
from services.inference.engine import AttemptFailure, CallOutcome, InferenceEngine, InferenceFailed
from services.runtime.kv_docs import read_doc, write_doc
from services.runtime.worker import Worker

HEALTH_HEARTBEAT_S = 10.0
CAPACITY_POLL_S = 1.0


def build(worker: Worker) -> None:
    engine = InferenceEngine(worker.config)
    currency = worker.config.currency
    worker_id = subjects.token(worker.settings.worker_id)
    reported: dict[Route, str] = {}
    local_deployments = [d for d in worker.config.deployments if d.route == "local-vllm"]
    http = httpx.AsyncClient(timeout=1.0)

    async def report_health(force: bool = False) -> None:
        kv = await worker.kv(KV_PROVIDER_HEALTH)
        now = time.monotonic()
        for route, breaker in engine.breakers.items():
            state = breaker.state(now)
            if force or reported.get(route) != state:
                reported[route] = state
                value = ProviderHealthState(
                    route=route,
                    worker_id=worker_id,
                    state=state,
                    consecutive_failures=breaker.consecutive_failures,
                )
                await kv.put(f"{route}.{worker_id}", msgspec.json.encode(value))

    async def heartbeat_health() -> None:
        await report_health(force=True)

    async def poll_capacity() -> None:
        kv = await worker.kv(KV_CAPACITY)
        for deployment in local_deployments:
            response = await http.get(metrics_url(deployment))
            response.raise_for_status()
            state = capacity_from_metrics(deployment, response.text)
            await kv.put(deployment.name, msgspec.json.encode(state))

    async def count_quota(outcome: CallOutcome) -> None:
        # Our own count where the config states the quota; the provider's headers where it
        # sends them (they also see other clients of the same key) — the stricter one wins.
        limit = outcome.deployment.tokens_per_minute or (
            outcome.provider_quota.limit if outcome.provider_quota else None
        )
        if not limit:
            return
        kv = await worker.kv(KV_CAPACITY)
        window_s = outcome.deployment.quota_window_s
        key, window = f"quota.{outcome.route}", int(time.time() // window_s)
        tokens = outcome.prompt_tokens + outcome.completion_tokens
        for _ in range(20):  # compare-and-set: several workers count into one window
            state, revision = await read_doc(
                kv,
                key,
                QuotaState,
                lambda: QuotaState(route=outcome.route, limit=limit, used=0.0, window=window),
            )
            used = (state.used if state.window == window else 0.0) + tokens
            if outcome.provider_quota:
                used = max(used, outcome.provider_quota.limit - outcome.provider_quota.remaining)
            fresh = QuotaState(route=outcome.route, limit=limit, used=used, window=window, window_s=window_s)
            if await write_doc(kv, key, fresh, revision):
                return

    def record_call_metrics(outcome: CallOutcome) -> None:
        m, route, name = worker.metrics, outcome.route, outcome.deployment.name
        for attempt in outcome.failed_attempts:
            m.inference_calls.labels(attempt.route, "-", "failed").inc()
        m.inference_calls.labels(route, name, "fallback" if outcome.fallback_from else "completed").inc()
        m.inference_latency.labels(route, name).observe(outcome.latency_ms / 1000)
        if outcome.ttft_ms is not None:
            m.inference_ttft.labels(route, name).observe(outcome.ttft_ms / 1000)
        m.inference_tokens.labels(route, name, "prompt").inc(outcome.prompt_tokens)
        m.inference_tokens.labels(route, name, "completion").inc(outcome.completion_tokens)
        if outcome.gpu_seconds:
            m.inference_gpu_seconds.labels(name).inc(outcome.gpu_seconds)

    def attempt_audit(event: RequestRouted, attempt: AttemptFailure, index: int) -> AuditEvent:
        return AuditEvent(
            **envelope_fields(event),
            stage="inference",
            outcome=f"attempt_failed.{index}",
            reason_code=attempt.code,
            route=attempt.route,
            attributes={"error_type": attempt.error_type},
        )

    async def on_routed(event: RequestRouted) -> None:
        try:
            outcome = await engine.run(
                event.routing, event.messages, event.params, timeout_s=event.remaining_s()
            )
        except InferenceFailed as failure:
            for attempt in failure.attempts:
                worker.metrics.inference_calls.labels(attempt.route, "-", "failed").inc()
            await asyncio.gather(
                report_health(),
                *(worker.audit(attempt_audit(event, a, i)) for i, a in enumerate(failure.attempts, 1)),
            )
            await worker.fail(
                event, failure.code, stage="inference", routing=event.routing, dlp_input=event.dlp_input
            )
            return
        record_call_metrics(outcome)
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
        failed_attempts = [
            worker.audit(attempt_audit(event, a, i)) for i, a in enumerate(outcome.failed_attempts, 1)
        ]
        # Independent publishes: send them together, wait once.
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
                    fallbacks=[outcome.fallback_from] if outcome.fallback_from else [],
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
                    attributes={"fallback_from": outcome.fallback_from} if outcome.fallback_from else {},
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
            count_quota(outcome),
            report_health(),
            *failed_attempts,
        )

    worker.every(HEALTH_HEARTBEAT_S, heartbeat_health)
    if local_deployments:
        worker.every(CAPACITY_POLL_S, poll_capacity)
    worker.consume(INFERENCE, RequestRouted, on_routed)
