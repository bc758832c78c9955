"""Handlers of the request path without a server: an event in, effects out (issue 11).

The mesh tests prove the wiring; these prove each stage's decisions and what it hands on —
the audit trail it extends, the typed failure it ends a request with.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import subjects
from schemas.events import (
    AuditEvent,
    ChatMessage,
    DlpDecision,
    InferenceInfo,
    RequestRouted,
    RequestScreened,
    RequestSubmitted,
    ResponseGenerated,
    RoutingDecision,
    RuntimeSignals,
    TokenUsage,
    deadline_in,
    utcnow,
)
from services.dlp.guard import DlpGuard, DlpSettings
from services.dlp.handlers import screen_input, screen_output
from services.inference.engine import AttemptFailure, CallOutcome, InferenceFailed
from services.inference.handlers import call_completed, call_failed
from services.router.decision import RouterSettings, RoutingEngine
from services.router.handlers import route_request
from services.runtime.effects import Fail, Publish, Record, Reply, expand
from services.runtime.settings import MeshSettings, load_config

ENVELOPE = {
    "request_id": "r1",
    "correlation_id": "c1",
    "tenant": "acme",
    "business_unit": "claims",
    "user_role": "analyst",
    "usecase_class": "chat",
}
RECEIVED = AuditEvent(**ENVELOPE, deadline=deadline_in(30), stage="gateway", outcome="received")


@pytest.fixture(scope="module")
def guard() -> DlpGuard:
    return DlpGuard.from_settings(DlpSettings())


def submitted(text: str) -> RequestSubmitted:
    return RequestSubmitted(
        **ENVELOPE, deadline=deadline_in(30), messages=[ChatMessage(role="user", content=text)], trail=[RECEIVED]
    )


def allow_decision(direction: str = "input") -> DlpDecision:
    return DlpDecision(
        direction=direction,  # type: ignore[arg-type]
        action="allow",
        rule_id="dlp.allow.no_pii",
        policy_version="v",
        language="de",
        derived_sensitivity="internal",
        has_pii=False,
        has_medical_terms=False,
    )


def test_clean_prompt_is_forwarded_with_the_decision_on_the_trail(guard: DlpGuard) -> None:
    effects = screen_input(guard, submitted("Bitte fasse den Schadenfall kurz zusammen."))
    assert len(effects) == 1 and isinstance(effects[0], Publish)
    publish = effects[0]
    assert publish.subject == subjects.REQUEST_SCREENED
    assert publish.msg_id == "r1:screened"  # idempotent successor
    screened = publish.event
    assert isinstance(screened, RequestScreened)
    assert [e.stage for e in screened.trail] == ["gateway", "dlp_input"]
    assert screened.trail[-1].rule_id == screened.dlp_input.rule_id


def test_email_in_prompt_is_redacted_before_it_leaves_the_stage(guard: DlpGuard) -> None:
    effects = screen_input(guard, submitted("Schreib an erika.mustermann@example.org wegen Vorgang 4711."))
    screened = effects[0].event  # type: ignore[union-attr]
    assert isinstance(screened, RequestScreened)
    leaked = "erika.mustermann@example.org" in screened.messages[0].content
    assert not leaked
    assert screened.dlp_input.action in ("redact", "pseudonymize")


def test_output_screening_writes_the_trail_before_it_replies(guard: DlpGuard) -> None:
    routed = RequestRouted(
        **ENVELOPE, deadline=deadline_in(30), messages=[], trail=[RECEIVED], dlp_input=allow_decision(),
        routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p"),
    )
    generated = ResponseGenerated(
        **{f: getattr(routed, f) for f in routed.__struct_fields__ if f != "event_id"},
        content="Der Schaden ist reguliert.", usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
        inference=InferenceInfo(route="local-vllm", deployment="d", model="m", model_version="1",
                                config_version="v1", prompt_template_version="t", ttft_ms=None, latency_ms=1.0),
    )
    effects = screen_output(guard, generated)
    assert [type(e) for e in effects] == [Record, Reply]
    record, reply = effects
    assert isinstance(record, Record) and isinstance(reply, Reply)
    assert [e.stage for e in record.events] == ["gateway", "dlp_output"]
    assert reply.result.status == "ok" and reply.result.content == "Der Schaden ist reguliert."


def test_a_failure_becomes_the_trail_plus_the_failure_then_a_typed_reply() -> None:
    event = submitted("x")
    stored, replies = expand(event, [Fail("dlp_unavailable", "dlp_input")])
    assert len(stored) == 1 and isinstance(stored[0], Record)
    assert [(e.stage, e.outcome, e.reason_code) for e in stored[0].events] == [
        ("gateway", "received", None),
        ("dlp_input", "failed", "dlp_unavailable"),
    ]
    assert replies[0].result.error is not None and replies[0].result.error.code == "dlp_unavailable"
    assert replies[0].result.status == "failed"


def test_router_forwards_with_its_rule_on_the_trail() -> None:
    engine = RoutingEngine(RouterSettings())
    screened = RequestScreened(
        **ENVELOPE, deadline=deadline_in(30), messages=[ChatMessage(role="user", content="Hallo")],
        trail=[RECEIVED], dlp_input=allow_decision(),
    )
    effects = route_request(engine, RuntimeSignals(), screened, engine.settings.tokenizer_encoding)
    assert isinstance(effects[0], Publish)
    routed = effects[0].event
    assert isinstance(routed, RequestRouted)
    assert routed.trail[-1].stage == "router" and routed.trail[-1].rule_id == routed.routing.rule_id
    assert routed.trail[-1].policy_version == routed.routing.policy_version


def test_router_refusal_ends_the_request_with_its_rule() -> None:
    engine = RoutingEngine(RouterSettings())
    screened = RequestScreened(
        **ENVELOPE, deadline=deadline_in(30), messages=[ChatMessage(role="user", content="Hallo")],
        trail=[RECEIVED], dlp_input=allow_decision(),
    )
    everything_down = RuntimeSignals(
        local_capacity_ok=False, api_quota_remaining=0.0,
        provider_health={"local-vllm": "unhealthy", "api-gpt52": "unhealthy"},
    )
    effects = route_request(engine, everything_down, screened, engine.settings.tokenizer_encoding)
    assert len(effects) == 1 and isinstance(effects[0], Fail)
    fail = effects[0]
    assert fail.rule_id and fail.audits and fail.audits[0].outcome == "refused"


def _outcome(config_deployment: object) -> CallOutcome:
    return CallOutcome(
        route="local-vllm", deployment=config_deployment, content="ok", finish_reason="stop",  # type: ignore[arg-type]
        prompt_tokens=5, completion_tokens=7, ttft_ms=None, latency_ms=12.0, gpu_seconds=0.0, cost=0.01,
        fallback_from=None,
    )


def test_completed_call_books_usage_once_and_forwards_the_answer() -> None:
    config = load_config(MeshSettings().config_file)
    routed = RequestRouted(
        **ENVELOPE, deadline=deadline_in(30), messages=[], trail=[RECEIVED], dlp_input=allow_decision(),
        routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p"),
    )
    effects = call_completed(routed, _outcome(config.deployments_for("local-vllm")[0]), "EUR")
    assert [e.subject for e in effects if isinstance(e, Publish)] == [
        subjects.USAGE_RECORDED, subjects.RESPONSE_GENERATED
    ]
    usage, generated = effects
    assert isinstance(usage, Publish) and usage.msg_id == "usage:r1.local-vllm"  # counted once
    assert isinstance(generated, Publish) and isinstance(generated.event, ResponseGenerated)
    assert [e.stage for e in generated.event.trail] == ["gateway", "inference"]


def test_failed_call_records_every_attempt() -> None:
    routed = RequestRouted(
        **ENVELOPE, deadline=deadline_in(30), messages=[], trail=[RECEIVED], dlp_input=allow_decision(),
        routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p", fallbacks=["api-gpt52"]),
    )
    failure = InferenceFailed("provider_error", [AttemptFailure("local-vllm", "provider_error", "X"),
                                                 AttemptFailure("api-gpt52", "provider_timeout", "Y")])
    stored, replies = expand(routed, call_failed(routed, failure))
    outcomes = [e.outcome for e in stored[0].events]  # type: ignore[union-attr]
    assert outcomes == ["received", "attempt_failed.1", "attempt_failed.2", "failed"]
    assert replies[0].result.error is not None and replies[0].result.error.code == "provider_error"


def test_expired_deadline_is_seen_by_the_envelope() -> None:
    event = submitted("x")
    event.deadline = utcnow() - timedelta(seconds=1)
    assert event.expired()
