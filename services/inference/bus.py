"""Inference worker contract.

consumes  stellwerk.v1.request.routed      (durable ``inference``)
publishes stellwerk.v1.response.generated  (to dlp output screening)
          stellwerk.v1.response.streaming  (stream: a streamed answer opened, to dlp output screening)
          stellwerk.v1.chunk.<id>          (stream: the answer's raw text in order, CHUNKS memory stream)
          stellwerk.v1.usage.recorded      (to finops; one per call, idempotent by call id)
          stellwerk.v1.result.<id>         (failure: provider error/timeout, typed)
          stellwerk.v1.audit.trail.inference (the trail of a failed call; a completed call's
                                           record and failed attempts travel on the trail)
writes    KV provider_health <route>.<worker>   (circuit breaker state, on change + heartbeat)
          KV capacity <deployment>              (from each local deployment's /metrics)
          KV capacity quota.<route>             (tokens used in the current quota window)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from schemas import subjects
from schemas.events import (
    ChatMessage,
    RequestRouted,
    ScreenReply,
    ScreenRequest,
    StreamChunk,
    decode,
    encode,
    envelope_fields,
    utcnow,
)
from schemas.kv import ProviderHealthState, QuotaState
from schemas.streams import CHUNKS, INFERENCE, KV_CAPACITY, KV_PROVIDER_HEALTH, KV_ROLLOUTS
from schemas.vocabulary import Route
from services.inference.capacity import capacity_from_metrics, metrics_url
from services.inference.engine import CallOutcome, InferenceEngine, InferenceFailed
from services.inference.handlers import (
    call_completed,
    call_failed,
    call_records,
    embeddings_completed,
    failure_records,
    streaming_of,
    usage_effect,
)
from services.inference.rollout import (
    ShadowSlots,
    judge,
    rollback_audit,
    rollback_state,
    shadow_failed_audit,
    shadow_records,
    template_for,
    unless_rolled_back,
    variant_failed,
    with_template,
)
from services.kernel.variants import VariantWindow
from services.runtime.effects import Effects, Fail
from services.runtime.kv_docs import read_doc, write_doc
from services.runtime.prompts import configured_templates
from services.runtime.rollouts import RolledBack, RolloutMetrics, until_landed
from services.runtime.worker import Worker

HEALTH_HEARTBEAT_S = 10.0
CAPACITY_POLL_S = 1.0


def build(worker: Worker) -> None:
    engine = InferenceEngine(worker.config)
    currency = worker.config.currency
    worker_id = subjects.token(worker.settings.worker_id)
    reported: dict[Route, str] = {}
    local_routes = {r.name for r in worker.config.routes if r.locality == "local"}
    local_deployments = [d for d in worker.config.deployments if d.route in local_routes]
    pending: set[asyncio.Task[None]] = set()
    config = worker.config
    # Issue 17. Templates checked at start: a broken template directory stops the worker
    # instead of sending requests without their system prompt (fail closed).
    templates = configured_templates(
        config.prompts_dir, {str(k): v for k, v in config.prompt_templates.items()},
        {v.prompt_template for r in config.routes for v in r.variants if v.prompt_template},
    )
    specs = {r.name: r for r in config.routes}
    rollout_metrics = RolloutMetrics(worker.metrics.registry)
    windows: dict[tuple[str, str], VariantWindow] = {}
    rolled_back = RolledBack(rollout_metrics, on_restore=lambda route, variant: windows.pop((route, variant), None))
    worker.watch(RolledBack.bucket, rolled_back.apply)
    shadow_slots = ShadowSlots(config.shadow_max_in_flight)

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
            text = await engine.wire.fetch_text(metrics_url(deployment), timeout_s=1.0)
            state = capacity_from_metrics(deployment, text)
            engine.observe_running(deployment.name, state.requests_running + state.requests_waiting)
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

    def in_background(job: Awaitable[None]) -> None:
        # Signals for the router (quota, breaker health) are not the request's business:
        # the answer does not wait for them, and a failed write is only logged.
        async def guarded() -> None:
            try:
                await job
            except Exception as exc:  # noqa: BLE001 - signals are best effort, the next call retries
                worker.log.warning("signal_write_failed", error=type(exc).__name__)

        task = asyncio.create_task(guarded())
        pending.add(task)
        task.add_done_callback(pending.discard)

    def observe_variant(event: RequestRouted, outcome: CallOutcome | None, failure: InferenceFailed | None) -> None:
        """Per-variant metrics, and a canary's window judged against its thresholds."""
        variant, route = event.routing.variant, event.routing.route
        failed = variant_failed(event, outcome, failure)
        if variant is None or failed is None:
            return
        m = rollout_metrics
        m.calls.labels(route, variant.name, "false", "error" if failed else "ok").inc()
        if outcome is not None and not failed:
            m.latency.labels(route, variant.name, "false").observe(outcome.latency_ms / 1000)
            m.tokens.labels(route, variant.name, "false", "prompt").inc(outcome.prompt_tokens)
            m.tokens.labels(route, variant.name, "false", "completion").inc(outcome.completion_tokens)
            m.cost.labels(route, variant.name, "false").inc(outcome.cost)
        spec = specs.get(route)
        key = f"{route}.{variant.name}"
        if not variant.canary or spec is None or key in rolled_back:
            return
        window = windows.setdefault((route, variant.name), VariantWindow(spec.rollback.window_s))
        now = time.monotonic()
        window.add(now, not failed, outcome.latency_ms if outcome is not None else 0.0)
        verdict = judge(window, spec, now)
        if verdict is not None:
            rolled_back.hold(key)  # this replica stops at once; the others follow KV
            in_background(roll_back(route, variant.name, *verdict))

    async def roll_back(route: str, variant: str, reason: Any, measured: Any) -> None:
        state = rollback_state(route, variant, reason, measured)

        async def create() -> bool:
            kv = await worker.kv(KV_ROLLOUTS)
            try:
                # Create-only: when several replicas breach at once, one writes and audits.
                await kv.create(f"{route}.{variant}", msgspec.json.encode(state))
            except KeyWrongLastSequenceError:
                return False
            return True

        # Retried until it lands: the routers only learn of the breach from KV.
        if not await until_landed(create, lambda exc: worker.log.warning(
                "variant_rollback_write_failed", route=route, variant=variant, error=type(exc).__name__)):
            return
        rollout_metrics.rollbacks.labels(route, variant, reason).inc()
        worker.log.warning("variant_rolled_back", route=route, variant=variant, reason=reason,
                           requests=measured.requests, error_rate=round(measured.error_rate, 4))
        await worker.audit(rollback_audit(state, specs[route], utcnow(), worker_id))

    def mirror(event: RequestRouted, template_version: str | None, messages: list[ChatMessage]) -> None:
        """The request, as inference received it (screened, with its template), to the shadow
        deployment in the background; the caller's answer never waits for it. At most
        ``shadow_max_in_flight`` at once: beyond that the mirror is dropped (metric only)."""
        target, dropped = shadow_slots.admit(event)
        if dropped and event.routing.shadow is not None:
            rollout_metrics.shadow_dropped.labels(event.routing.route, event.routing.shadow).inc()
        if target is None:
            return

        async def bounded() -> None:
            try:
                await shadow_call(event, target, template_version, messages)
            finally:
                shadow_slots.release()

        in_background(bounded())

    async def shadow_call(event: RequestRouted, target: str, template_version: str | None,
                          messages: list[ChatMessage]) -> None:
        route = event.routing.route
        params = msgspec.structs.replace(event.params, n=None) if event.params.n else event.params
        try:
            outcome = await engine.shadow(target, messages, params, timeout_s=max(event.remaining_s(), 1.0))
        except InferenceFailed as failure:
            rollout_metrics.calls.labels(route, "shadow", "true", "error").inc()
            target_route = failure.attempts[0].route if failure.attempts else route
            await worker.audit(shadow_failed_audit(event, target, target_route, failure.code))
            return
        # Its tokens use the provider's quota like any call's: the router must see them.
        in_background(count_quota(outcome))
        # Screened like a real answer, though nobody reads it: its DLP outcome is part of what
        # the shadow is compared on (a model that leaks more is not a better model).
        action = None
        try:
            screen = ScreenRequest(**envelope_fields(event), direction="output", texts=[outcome.content])
            reply = decode((await worker.nc.request(subjects.DLP_SCREEN, encode(screen), timeout=10.0)).data,
                           ScreenReply)
            action = reply.decision.action if reply.decision is not None else None
        except Exception as exc:  # noqa: BLE001 - no screening: recorded as "unavailable", never released anyway
            worker.log.warning("shadow_screening_failed", error=type(exc).__name__)
        m = rollout_metrics
        m.calls.labels(route, "shadow", "true", "ok").inc()
        m.latency.labels(route, "shadow", "true").observe(outcome.latency_ms / 1000)
        m.tokens.labels(route, "shadow", "true", "prompt").inc(outcome.prompt_tokens)
        m.tokens.labels(route, "shadow", "true", "completion").inc(outcome.completion_tokens)
        m.cost.labels(route, "shadow", "true").inc(outcome.cost)
        m.dlp.labels(route, "shadow", action or "unavailable").inc()
        audit, usage = shadow_records(event, outcome, currency, action, template_version)
        await worker.publish(subjects.USAGE_RECORDED, usage, f"usage:{usage.call_id}")
        await worker.audit(audit)

    async def stream_answer(event: RequestRouted) -> Effects:
        """Stream the model's text into CHUNKS as it comes; output DLP screens and releases it.

        The stream is opened (``response.streaming``) with the first piece of text, so any
        fallback has happened by then. Chunks go out as plain publishes into the CHUNKS
        stream (stored in the order this connection sends them, no round trip per token);
        the last one is acknowledged and carries the digest, usage and the call's records."""
        subject = subjects.chunk(event.request_id)
        js = worker.js
        if await previously_streamed(subject):
            # A redelivery after this stream broke off: the caller already has part of an
            # answer; a second call would repeat it. End it typed instead.
            return [Fail("stream_interrupted", "inference", result_fields={"routing": event.routing})]
        seq, opened, digest = [0], [False], hashlib.sha256()

        async def open_stream() -> None:
            opened[0] = True
            await worker.publish(subjects.RESPONSE_STREAMING, streaming_of(event), f"{event.request_id}:streaming")

        async def end_stream(last: StreamChunk) -> None:
            # Acknowledged: once the last chunk is stored, every chunk before it is.
            await js.publish(subject, encode(last), headers={"Nats-Msg-Id": f"{subject}:{seq[0]}"})

        async def broke_off(failure: InferenceFailed) -> Effects:
            if not opened[0]:  # nothing reached the caller yet: an ordinary typed failure
                return call_failed(event, failure)
            await end_stream(
                StreamChunk(seq=seq[0], final=True, failed=failure.code, trail=failure_records(event, failure))
            )
            return []  # output screening ends the stream and records the trail

        async def on_text(text: str) -> None:
            if not opened[0]:
                await open_stream()
            digest.update(text.encode())
            await worker.nc.publish(subject, encode(StreamChunk(seq=seq[0], text=text)))
            seq[0] += 1

        template = template_for(event, config, templates)
        template_version = template.version if template else None
        messages = with_template(event, template)
        mirror(event, template_version, messages)
        variant = event.routing.variant
        call = asyncio.ensure_future(
            engine.run(event.routing, messages, event.params, timeout_s=event.remaining_s(), on_text=on_text,
                       deployment=variant.deployment if variant else None,
                       canary=bool(variant and variant.canary))
        )

        async def on_cancel(_: Msg) -> None:
            call.cancel()  # closes the model connection: the model server stops generating

        cancelled = await worker.nc.subscribe(subjects.cancel(event.request_id), cb=on_cancel, max_msgs=1)
        try:
            outcome = await call
        except asyncio.CancelledError:
            if not call.cancelled():
                raise  # the worker itself is stopping
            worker.metrics.inference_calls.labels(event.routing.route, "-", "cancelled").inc()
            return await broke_off(InferenceFailed("client_disconnected", []))
        except InferenceFailed as failure:
            for attempt in failure.attempts:
                worker.metrics.inference_calls.labels(attempt.route, "-", "failed").inc()
            observe_variant(event, None, failure)
            in_background(report_health())
            return await broke_off(failure)
        finally:
            with contextlib.suppress(Exception):
                await cancelled.unsubscribe()
        record_call_metrics(outcome)
        observe_variant(event, outcome, None)
        in_background(count_quota(outcome))
        in_background(report_health())
        if not opened[0]:  # an empty answer still goes through screening and to the caller
            await open_stream()
        records, info, recorded, usage = call_records(event, outcome, currency, template_version)
        await end_stream(StreamChunk(
            seq=seq[0], final=True, finish_reason=outcome.finish_reason, usage=usage, cost=outcome.cost,
            sha256=digest.hexdigest(), inference=info, currency=currency, trail=records,
            tool_calls=outcome.tool_calls,
        ))
        return [usage_effect(recorded)]

    async def previously_streamed(subject: str) -> bool:
        try:
            await worker.js.get_last_msg(CHUNKS.name, subject)
        except NotFoundError:
            return False
        return True

    async def on_routed(event: RequestRouted) -> Effects:
        # A variant this replica rolled back goes to the route's stable deployments even while
        # the router still picks it (its KV record pending or in transit).
        event = unless_rolled_back(event, rolled_back.keys)
        if event.stream:
            return await stream_answer(event)
        operation = event.attributes.operation
        template = template_for(event, config, templates)
        template_version = template.version if template else None
        messages = with_template(event, template)
        mirror(event, template_version, messages)
        variant = event.routing.variant
        try:
            outcome = await engine.run(event.routing, messages, event.params, timeout_s=event.remaining_s(),
                                       operation=operation, deployment=variant.deployment if variant else None,
                                       canary=bool(variant and variant.canary))
        except InferenceFailed as failure:
            for attempt in failure.attempts:
                worker.metrics.inference_calls.labels(attempt.route, "-", "failed").inc()
            observe_variant(event, None, failure)
            in_background(report_health())
            return call_failed(event, failure)
        record_call_metrics(outcome)
        observe_variant(event, outcome, None)
        in_background(count_quota(outcome))
        in_background(report_health())
        if operation == "embeddings":
            return embeddings_completed(event, outcome, currency)
        return call_completed(event, outcome, currency, template_version)

    worker.every(HEALTH_HEARTBEAT_S, heartbeat_health)
    if local_deployments:
        worker.every(CAPACITY_POLL_S, poll_capacity)
    # A model call mostly waits: in flight as many as the deployments can serve at once.
    worker.consume(INFERENCE, RequestRouted, on_routed, max_in_flight=engine.capacity)
