"""Router handler: a screened request and the current signals in, effects out (no I/O)."""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from schemas import subjects
from schemas.events import (
    AuditEvent,
    RequestAttributes,
    RequestRouted,
    RequestScreened,
    RoutingDecision,
    RuntimeSignals,
    envelope_fields,
)
from services.router.attributes import effective_attributes
from services.router.context_length import measure_prompt
from services.router.decision import (
    RouteEntry,
    RoutingEngine,
    RoutingInput,
    RoutingUnavailable,
    route_catalogue,
)
from services.router.policy_canary import PolicyCanaryState
from services.runtime.effects import Effects, Fail, Publish
from services.runtime.metrics import WorkerMetrics
from services.runtime.rollouts import RolloutMetrics, choose_variant, shadow_for
from services.runtime.settings import DEFAULT_CONFIG, PlatformConfig, cached_config


def route_request(
    engine: RoutingEngine,
    signals: RuntimeSignals,
    event: RequestScreened,
    encoding: str,
    metrics: WorkerMetrics | None = None,
    routes: list[RouteEntry] | None = None,
    config: PlatformConfig | None = None,
    rolled_back: Collection[str] = (),
    rollout_metrics: RolloutMetrics | None = None,
    policy_canary: PolicyCanaryState | None = None,
) -> Effects:
    """``routes``: the catalogue with each route's capacity and quota now (the worker's
    ``SignalBoard.routes_for``); None takes the shipped default config's routes. ``config``
    (default: the shipped one) holds the routes' variants and shadows; ``rolled_back``: the
    ``<route>.<variant>`` keys of KV ``rollouts`` (those variants get weight 0);
    ``policy_canary``: a routing-policy version deciding a share of the requests."""
    config = config or cached_config(DEFAULT_CONFIG)
    if routes is None:
        routes = route_catalogue(config)
    prompt = measure_prompt(event.messages, encoding)
    attributes = effective_attributes(
        event.attributes,
        dlp_sensitivity=event.dlp_input.derived_sensitivity,
        context_length_bucket=prompt.bucket,
    )
    policy_input = RoutingInput.from_request(event, attributes, signals, routes)
    try:
        verdict = engine.evaluate(policy_input)
    except RoutingUnavailable:
        return [Fail("policy_unavailable", "router")]
    canary: dict[str, str] = {}
    if policy_canary is not None and policy_canary.applies(event.request_id):
        stable_route = verdict.decision.route
        verdict, error = policy_canary.decide(policy_input, verdict)
        canary = {"policy_variant": "canary", "stable_route": stable_route}
        if error is not None:
            canary |= {"policy_canary_error": "true", "policy_canary_reason": error}
    decision = verdict.decision
    decision.prompt_tokens_estimate = prompt.tokens
    if metrics is not None:
        metrics.routing_decisions.labels(decision.route, decision.rule_id).inc()
        metrics.prompt_tokens.labels(prompt.bucket).observe(prompt.tokens)
    envelope = envelope_fields(event)
    refused = decision.route == "fallback-policy"
    rollout: dict[str, str] = {}
    if not refused:
        rollout = _choose_rollout(engine, config, event, attributes, signals, routes, decision, rolled_back,
                                  rollout_metrics)
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
            **rollout,
            **canary,
            # PTU (issue 17): the reserved route whose throughput was used up.
            **({"spillover_from": decision.spillover_from} if decision.spillover_from else {}),
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


def _choose_rollout(
    engine: RoutingEngine,
    config: PlatformConfig,
    event: RequestScreened,
    attributes: RequestAttributes,
    signals: RuntimeSignals,
    routes: list[RouteEntry],
    decision: RoutingDecision,
    rolled_back: Collection[str],
    metrics: RolloutMetrics | None,
) -> dict[str, str]:
    """After the policy chose the route: the route's variant (hash of the request id) and the
    shadow mirror, set on ``decision``; returns the audit attributes that record them.

    A shadow goes only where the policy itself would send this request if it named the
    shadow's route: the same evaluation decides locality (local-only data never mirrored to
    an external API), budget and availability — nothing is decided here a second time."""
    spec = config.route(decision.route)
    if spec is None:
        return {}
    found: dict[str, str] = {}
    gone = {key.split(".", 1)[1] for key in rolled_back if key.startswith(f"{spec.name}.")}
    decision.variant = choose_variant(spec, event.request_id, gone)
    if decision.variant is not None:
        found["variant"] = decision.variant.name
        if decision.variant.canary:
            found["canary"] = "true"
        if metrics is not None:
            metrics.routed.labels(spec.name, decision.variant.name, str(decision.variant.canary).lower()).inc()
    shadow = shadow_for(spec, event.request_id)
    if shadow is None:
        return found
    shadow_route = next((d.route for d in config.deployments if d.name == shadow), None)
    allowed = shadow_route == decision.route
    if not allowed and shadow_route is not None:
        named = msgspec.structs.replace(attributes, requested_model=shadow_route)
        try:
            verdict = engine.evaluate(RoutingInput.from_request(event, named, signals, routes))
            allowed = verdict.decision.route == shadow_route
        except RoutingUnavailable:
            allowed = False  # fail closed: no policy answer, no mirror
    if allowed:
        decision.shadow = shadow
    found["shadow"] = shadow if allowed else "refused_by_policy"
    if metrics is not None:
        metrics.shadow_decisions.labels(spec.name, shadow, "mirrored" if allowed else "refused_by_policy").inc()
    return found
