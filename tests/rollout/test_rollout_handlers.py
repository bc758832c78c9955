"""Router and inference decisions of canary and shadow, as effects and records (no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from schemas import subjects
from schemas.events import (
    AuditEvent,
    ChatMessage,
    DlpDecision,
    RequestAttributes,
    RequestRouted,
    RequestScreened,
    RoutingDecision,
    RuntimeSignals,
    VariantChoice,
    deadline_in,
)
from services.inference.engine import AttemptFailure, CallOutcome, InferenceFailed
from services.inference.handlers import call_completed
from services.inference.rollout import (
    ShadowSlots,
    rollback_audit,
    rollback_state,
    shadow_records,
    template_for,
    variant_failed,
    with_template,
)
from services.kernel.variants import Measured
from services.router.decision import RouterSettings, RoutingEngine
from services.router.handlers import route_request
from services.runtime.effects import Fail, Publish
from services.runtime.prompts import SHIPPED_PROMPTS_DIR, check_prompts
from services.runtime.rollouts import canary_deployments, choose_variant
from services.runtime.settings import DEFAULT_CONFIG, PlatformConfig

ENVELOPE: dict[str, Any] = {
    "request_id": "r1", "correlation_id": "c1", "tenant": "acme", "business_unit": "claims",
    "user_role": "analyst", "usecase_class": "chat",
}


def config_with(**route_extra: Any) -> PlatformConfig:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["deployments"].append({**raw["deployments"][0], "name": "local-vllm-2"})
    raw["deployments"].append({**raw["deployments"][1], "name": "api-gpt52-shadow"})
    for route in raw["routes"]:
        if route["name"] == "local-vllm":
            route.update(route_extra)
    return PlatformConfig.model_validate(raw)


CANARY = config_with(
    variants=[
        {"name": "stable", "deployment": "local-vllm-1", "weight": 50},
        {"name": "canary", "deployment": "local-vllm-2", "weight": 50, "canary": True,
         "prompt_template": "chat/assistant-v2"},
    ],
    shadow={"deployment": "api-gpt52-shadow", "share": 100},
)


def allow(sensitivity: str = "internal") -> DlpDecision:
    return DlpDecision(direction="input", action="allow", rule_id="dlp.allow.no_pii", policy_version="v",
                       language="de", derived_sensitivity=sensitivity, has_pii=False,  # type: ignore[arg-type]
                       has_medical_terms=False)


def screened(request_id: str, sensitivity: str = "internal") -> RequestScreened:
    return RequestScreened(
        **{**ENVELOPE, "request_id": request_id}, deadline=deadline_in(30),
        messages=[ChatMessage(role="user", content="Hallo")],
        attributes=RequestAttributes(data_sensitivity=sensitivity),  # type: ignore[arg-type]
        dlp_input=allow(),
    )


@pytest.fixture(scope="module")
def engine() -> RoutingEngine:
    return RoutingEngine(RouterSettings())


def routed_by(engine: RoutingEngine, event: RequestScreened, rolled_back: set[str] | None = None) -> RequestRouted:
    effects = route_request(engine, RuntimeSignals(), event, engine.settings.tokenizer_encoding,
                            config=CANARY, rolled_back=rolled_back or set())
    assert isinstance(effects[0], Publish) and isinstance(effects[0].event, RequestRouted)
    return effects[0].event


def test_router_sets_the_variant_of_the_request_id_and_audits_it(engine: RoutingEngine) -> None:
    spec = CANARY.route("local-vllm")
    assert spec is not None
    seen = set()
    for i in range(40):
        routed = routed_by(engine, screened(f"req{i}"))
        assert routed.routing.route == "local-vllm"
        assert routed.routing.variant == choose_variant(spec, f"req{i}")  # reproducible from the id
        record = routed.trail[-1]
        assert record.stage == "router" and record.attributes["variant"] == routed.routing.variant.name  # type: ignore[union-attr]
        assert (record.attributes.get("canary") == "true") == routed.routing.variant.canary  # type: ignore[union-attr]
        seen.add(routed.routing.variant.name)  # type: ignore[union-attr]
    assert seen == {"stable", "canary"}


def test_a_rolled_back_canary_is_never_chosen(engine: RoutingEngine) -> None:
    names = {routed_by(engine, screened(f"req{i}"), {"local-vllm.canary"}).routing.variant.name  # type: ignore[union-attr]
             for i in range(40)}
    assert names == {"stable"}


def test_shadow_to_an_external_api_follows_the_policy_locality(engine: RoutingEngine) -> None:
    internal = routed_by(engine, screened("r-int", "internal"))
    assert internal.routing.shadow == "api-gpt52-shadow"
    assert internal.trail[-1].attributes["shadow"] == "api-gpt52-shadow"
    local_only = routed_by(engine, screened("r-hc", "highly_confidential"))
    assert local_only.routing.route == "local-vllm"  # the request itself is served locally
    assert local_only.routing.shadow is None
    assert local_only.trail[-1].attributes["shadow"] == "refused_by_policy"


def test_no_variant_and_no_shadow_on_a_refusal(engine: RoutingEngine) -> None:
    down = RuntimeSignals(local_capacity_ok=False, api_quota_remaining=0.0)
    effects = route_request(engine, down, screened("r-x"), engine.settings.tokenizer_encoding, config=CANARY)
    assert isinstance(effects[0], Fail)
    assert "variant" not in effects[0].audits[0].attributes


def test_canary_and_shadow_deployments_are_left_out_of_ordinary_picks() -> None:
    assert canary_deployments(CANARY) == {"local-vllm": {"local-vllm-2"}, "api-gpt52": {"api-gpt52-shadow"}}


def test_config_refuses_a_variant_on_another_routes_deployment() -> None:
    with pytest.raises(ValueError, match="no deployment of this route"):
        config_with(variants=[{"name": "x", "deployment": "api-gpt52-1", "weight": 1}])
    with pytest.raises(ValueError, match="not a canary"):
        config_with(variants=[{"name": "x", "deployment": "local-vllm-2", "weight": 1, "canary": True}])


def routed(variant: VariantChoice | None, shadow: str | None = None) -> RequestRouted:
    return RequestRouted(
        **ENVELOPE, deadline=deadline_in(30), messages=[ChatMessage(role="user", content="Hallo")],
        dlp_input=allow(), routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p",
                                                   variant=variant, shadow=shadow),
    )


def outcome(deployment: str, attempts: tuple[AttemptFailure, ...] = ()) -> CallOutcome:
    d = next(x for x in CANARY.deployments if x.name == deployment)
    return CallOutcome(route=d.route, deployment=d, content="answer", finish_reason="stop", prompt_tokens=5,
                       completion_tokens=7, ttft_ms=None, latency_ms=12.0, gpu_seconds=0.0, cost=0.01,
                       fallback_from=None, failed_attempts=attempts)


CANARY_VARIANT = VariantChoice(name="canary", deployment="local-vllm-2", prompt_template="chat/assistant-v2",
                               canary=True)


def test_template_is_injected_and_its_version_recorded() -> None:
    templates = check_prompts(SHIPPED_PROMPTS_DIR)
    event = routed(CANARY_VARIANT)
    template = template_for(event, CANARY, templates)
    assert template is not None and template.id == "chat/assistant-v2"
    messages = with_template(event, template)
    assert messages[0].role == "system" and "acme (claims)" in messages[0].content
    assert messages[1:] == event.messages
    effects = call_completed(event, outcome("local-vllm-2"), "EUR", template.version)
    usage, generated = effects
    assert isinstance(usage, Publish) and usage.event.variant == "canary"  # type: ignore[attr-defined]
    record = generated.event.trail[-1]  # type: ignore[attr-defined]
    assert record.prompt_template_version == template.version
    assert record.attributes["variant"] == "canary" and record.attributes["canary"] == "true"
    # Without a template the deployment's label stays, as before.
    assert template_for(routed(None), CANARY, templates) is None


def test_variant_failure_is_the_failure_of_its_deployment() -> None:
    event = routed(CANARY_VARIANT)
    failed_then_stable = outcome("local-vllm-1", (AttemptFailure("local-vllm", "provider_error", "X", "local-vllm-2"),))
    assert variant_failed(event, failed_then_stable, None) is True
    assert variant_failed(event, outcome("local-vllm-2"), None) is False
    assert variant_failed(event, None, InferenceFailed("provider_error", [])) is False
    assert variant_failed(routed(None), outcome("local-vllm-1"), None) is None


def test_a_canary_skipped_by_an_open_breaker_is_not_judged() -> None:
    # The route's breaker was open: the canary was never called, the fallback answered.
    skipped = (AttemptFailure("local-vllm", "provider_error", "CircuitOpen", "local-vllm-2"),
               AttemptFailure("local-vllm", "provider_error", "CircuitOpen", None))
    fallback = outcome("api-gpt52-1", skipped)
    assert variant_failed(routed(CANARY_VARIANT), fallback, None) is None
    assert variant_failed(routed(CANARY_VARIANT), None, InferenceFailed("provider_error", list(skipped))) is None
    template_only = VariantChoice(name="canary", prompt_template="chat/assistant-v2", canary=True)
    assert variant_failed(routed(template_only), fallback, None) is None
    # A call that was made and failed still counts.
    assert variant_failed(routed(template_only), outcome("api-gpt52-1", (
        AttemptFailure("local-vllm", "provider_error", "APIError"),)), None) is True


def test_shadow_is_booked_as_shadow_under_its_own_call_id() -> None:
    event = routed(None, shadow="api-gpt52-shadow")
    audit, usage = shadow_records(event, outcome("api-gpt52-shadow"), "EUR", "allow", None)
    assert usage.shadow is True and usage.variant == "shadow"
    assert usage.call_id == "r1.shadow.api-gpt52-shadow" and usage.deployment == "api-gpt52-shadow"
    assert audit.outcome == "shadow_completed" and audit.attributes["dlp_output"] == "allow"
    assert audit.attributes["shadow_of"] == "local-vllm"


def test_shadows_are_bounded_and_dropped_when_all_slots_are_taken() -> None:
    assert CANARY.shadow_max_in_flight == 16  # the default
    slots = ShadowSlots(2)
    mirrored = routed(None, shadow="api-gpt52-shadow")
    assert slots.admit(mirrored) == ("api-gpt52-shadow", False)
    assert slots.admit(mirrored) == ("api-gpt52-shadow", False)
    assert slots.admit(mirrored) == (None, True)  # full: dropped, not queued
    assert slots.admit(routed(None)) == (None, False)  # no shadow due: nothing dropped
    slots.release()
    assert slots.admit(mirrored) == ("api-gpt52-shadow", False)
    assert ShadowSlots(0).admit(mirrored) == (None, True)  # 0 turns mirroring off


def test_rollback_is_audited_with_actor_system_and_the_measured_values() -> None:
    spec = CANARY.route("local-vllm")
    assert spec is not None
    state = rollback_state("local-vllm", "canary", "error_rate", Measured(24, 12, 0.5, 30.0))
    record = rollback_audit(state, spec, datetime(2026, 12, 1, tzinfo=UTC), "w1")
    AuditEvent.__struct_config__  # noqa: B018 - a real AuditEvent (validated on the bus by its schema)
    assert record.user_role == "system" and record.attributes["actor"] == "system"
    assert record.outcome == "variant_rolled_back" and record.rule_id == "rollback.error_rate"
    assert record.attributes["variant"] == "canary" and record.attributes["error_rate"] == "0.5"
    assert record.attributes["requests"] == "24" and record.attributes["max_error_rate"] == "0.2"
    assert subjects.audit(record.stage) == "stellwerk.v1.audit.inference"
