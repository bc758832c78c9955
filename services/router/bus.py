"""Router worker contract.

consumes  stellwerk.v1.request.screened  (durable ``router``)
publishes stellwerk.v1.request.routed    (route, rule, policy version, allowed fallbacks)
          stellwerk.v1.result.<id>       (fallback-policy: typed refusal with retry hint)
          stellwerk.v1.audit.router
"""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.events import AuditEvent, RequestRouted, RequestScreened, RuntimeSignals, envelope_fields
from schemas.streams import ROUTER
from services.router.attributes import effective_attributes
from services.router.context_length import load_encoding, measure_prompt
from services.router.decision import RouterSettings, RoutingEngine, RoutingInput, RoutingUnavailable
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    engine = RoutingEngine(RouterSettings())
    encoding = engine.settings.tokenizer_encoding
    load_encoding(encoding)  # warm the tokenizer now, not on the first request
    signals = RuntimeSignals()

    async def on_screened(event: RequestScreened) -> None:
        prompt = measure_prompt(event.messages, encoding)
        attributes = effective_attributes(
            event.attributes,
            dlp_sensitivity=event.dlp_input.derived_sensitivity,
            context_length_bucket=prompt.bucket,
        )
        try:
            verdict = engine.evaluate(RoutingInput.from_request(event, attributes, signals))
        except RoutingUnavailable:
            await worker.fail(event, "policy_unavailable", stage="router")
            return
        decision = verdict.decision
        decision.prompt_tokens_estimate = prompt.tokens
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
