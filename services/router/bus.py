"""Router worker contract.

consumes  stellwerk.v1.request.screened  (durable ``router``)
          stellwerk.v1.control.policy.push  (every worker: install a pushed policy)
watches   KV provider_health, capacity, budgets (runtime signals, never awaited per request)
publishes stellwerk.v1.request.routed    (route, rule, policy version, allowed fallbacks)
          stellwerk.v1.result.<id>       (fallback-policy: typed refusal with retry hint)
          stellwerk.v1.audit.router
"""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import (
    AuditEvent,
    PolicyPushAck,
    PolicyPushed,
    RequestRouted,
    RequestScreened,
    decode,
    encode,
    envelope_fields,
)
from schemas.streams import KV_BUDGETS, KV_CAPACITY, KV_PROVIDER_HEALTH, ROUTER
from services.router.attributes import effective_attributes
from services.router.context_length import load_encoding, measure_prompt
from services.router.decision import RouterSettings, RoutingEngine, RoutingInput, RoutingUnavailable
from services.router.signals import SignalBoard
from services.runtime.rego import PolicyError, PolicySource
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    engine = RoutingEngine(RouterSettings())
    encoding = engine.settings.tokenizer_encoding
    load_encoding(encoding)  # warm the tokenizer now, not on the first request
    board = SignalBoard(worker.config)
    worker.watch(KV_PROVIDER_HEALTH, board.apply_health)
    worker.watch(KV_CAPACITY, board.apply_capacity)
    worker.watch(KV_BUDGETS, board.apply_budget, keys="state.>")

    async def subscribe_pushes() -> None:
        await worker.nc.subscribe(subjects.CONTROL_POLICY_PUSH, cb=on_push)

    async def on_push(msg: Msg) -> None:
        try:
            pushed = decode(msg.data, PolicyPushed)
            if pushed.policy != "routing":
                return
            engine.replace(PolicySource(modules=pushed.modules, data=pushed.data, version=pushed.version))
        except (msgspec.ValidationError, msgspec.DecodeError, PolicyError) as exc:
            worker.log.error("policy_push_rejected", error=type(exc).__name__)
            if msg.reply:
                await msg.respond(
                    encode(
                        PolicyPushAck(
                            worker_id=worker.settings.worker_id, accepted=False, version=engine.policy_version
                        )
                    )
                )
            return
        worker.log.warning("policy_pushed", version=pushed.version)
        if msg.reply:
            await msg.respond(
                encode(
                    PolicyPushAck(
                        worker_id=worker.settings.worker_id, accepted=True, version=engine.policy_version
                    )
                )
            )

    worker.on_start(subscribe_pushes)

    async def on_screened(event: RequestScreened) -> None:
        prompt = measure_prompt(event.messages, encoding)
        attributes = effective_attributes(
            event.attributes,
            dlp_sensitivity=event.dlp_input.derived_sensitivity,
            context_length_bucket=prompt.bucket,
        )
        signals = board.signals_for(event.tenant, event.business_unit, event.usecase_class)
        try:
            verdict = engine.evaluate(RoutingInput.from_request(event, attributes, signals))
        except RoutingUnavailable:
            await worker.fail(event, "policy_unavailable", stage="router")
            return
        decision = verdict.decision
        decision.prompt_tokens_estimate = prompt.tokens
        worker.metrics.routing_decisions.labels(decision.route, decision.rule_id).inc()
        worker.metrics.prompt_tokens.labels(prompt.bucket).observe(prompt.tokens)
        envelope = envelope_fields(event)
        audit = worker.audit(
            AuditEvent(
                **envelope,
                stage="router",
                outcome="refused" if decision.route == "fallback-policy" else "routed",
                rule_id=decision.rule_id,
                policy_version=decision.policy_version,
                reason_code=verdict.reason,
                route=decision.route,
                fallbacks=decision.fallbacks,
                data_sensitivity=attributes.data_sensitivity,
                prompt_tokens=prompt.tokens,
                attributes={
                    "quality_tier": attributes.quality_tier,
                    "budget_class": attributes.budget_class,
                    "context_length_bucket": attributes.context_length_bucket,
                    "local_capacity_ok": str(signals.local_capacity_ok).lower(),
                    "budget_exhausted": str(signals.budget_exhausted).lower(),
                    "api_quota_ok": str(signals.api_quota_remaining > 0).lower(),
                    "health_local": signals.provider_health.get("local-vllm", "healthy"),
                    "health_api": signals.provider_health.get("api-gpt52", "healthy"),
                    "budget_actions": "+".join(signals.budget_actions) or "none",
                },
            )
        )
        if decision.route == "fallback-policy":
            await audit
            await worker.fail(
                event,
                verdict.reason or "no_route_available",
                stage="router",
                rule_id=decision.rule_id,
                retry_after_s=verdict.retry_after_s,
                already_audited=True,
                dlp_input=event.dlp_input,
                routing=decision,
            )
            return
        routed = worker.publish(
            subjects.REQUEST_ROUTED,
            RequestRouted(
                **envelope,
                messages=event.messages,
                attributes=attributes,
                params=event.params,
                pseudonymize=event.pseudonymize,
                dlp_input=event.dlp_input,
                pseudonyms=event.pseudonyms,
                routing=decision,
            ),
            msg_id=f"{event.request_id}:routed",
        )
        await asyncio.gather(audit, routed)

    worker.consume(ROUTER, RequestScreened, on_screened)
