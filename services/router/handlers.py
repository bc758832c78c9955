"""Router handler: a screened request and the current signals in, effects out (no I/O)."""

from __future__ import annotations

from schemas import subjects
from schemas.events import AuditEvent, RequestRouted, RequestScreened, RuntimeSignals, envelope_fields
from services.router.attributes import effective_attributes
from services.router.context_length import measure_prompt
from services.router.decision import (
    RouteEntry,
    RoutingEngine,
    RoutingInput,
    RoutingUnavailable,
    route_catalogue,
)
from services.runtime.effects import Effects, Fail, Publish
from services.runtime.metrics import WorkerMetrics
from services.runtime.settings import DEFAULT_CONFIG, cached_config


def route_request(
    engine: RoutingEngine,
    signals: RuntimeSignals,
    event: RequestScreened,
    encoding: str,
    metrics: WorkerMetrics | None = None,
    routes: list[RouteEntry] | None = None,
) -> Effects:
    """``routes``: the catalogue with each route's capacity and quota now (the worker's
    ``SignalBoard.routes_for``); None takes the shipped default config's routes."""
    if routes is None:
        routes = route_catalogue(cached_config(DEFAULT_CONFIG))
    prompt = measure_prompt(event.messages, encoding)
    attributes = effective_attributes(
        event.attributes,
        dlp_sensitivity=event.dlp_input.derived_sensitivity,
        context_length_bucket=prompt.bucket,
    )
    try:
        verdict = engine.evaluate(RoutingInput.from_request(event, attributes, signals, routes))
    except RoutingUnavailable:
        return [Fail("policy_unavailable", "router")]
    decision = verdict.decision
    decision.prompt_tokens_estimate = prompt.tokens
    if metrics is not None:
        metrics.routing_decisions.labels(decision.route, decision.rule_id).inc()
        metrics.prompt_tokens.labels(prompt.bucket).observe(prompt.tokens)
    envelope = envelope_fields(event)
    refused = decision.route == "fallback-policy"
    audit = AuditEvent(
        **envelope,
        stage="router",
        outcome="refused" if refused else "routed",
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
            # Health of every route that is not healthy, as route=state (routes are data).
            "health": "+".join(f"{r}={h}" for r, h in sorted(signals.provider_health.items()) if h != "healthy")
            or "healthy",
            "operation": attributes.operation,
            "requested_model": attributes.requested_model or "stellwerk",
            "budget_actions": "+".join(signals.budget_actions) or "none",
        },
    )
    if refused:
        return [
            Fail(
                verdict.reason or "no_route_available",
                "router",
                rule_id=decision.rule_id,
                retry_after_s=verdict.retry_after_s,
                audits=[audit],
                result_fields={"dlp_input": event.dlp_input, "routing": decision},
            )
        ]
    routed = RequestRouted(
        **envelope,
        messages=event.messages,
        attributes=attributes,
        params=event.params,
        pseudonymize=event.pseudonymize,
        stream=event.stream,
        trail=[*event.trail, audit],
        dlp_input=event.dlp_input,
        pseudonyms=event.pseudonyms,
        routing=decision,
    )
    return [Publish(subjects.REQUEST_ROUTED, routed, f"{event.request_id}:routed")]
