"""RoutingEngine.decide: every rule of issue 4, reload, push, and failing closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.events import Envelope, RequestAttributes, RuntimeSignals, deadline_in
from services.router.decision import (
    RouterSettings,
    RoutingEngine,
    RoutingInput,
    RoutingUnavailable,
    effective_attributes,
)
from services.router.policy_store import check_policy_dir
from services.runtime.rego import PolicyError, read_policy_dir

from .conftest import TWO_ROUTES, routing_input, signals

L, A, F = "local-vllm", "api-gpt52", "fallback-policy"

RULE_SCENARIOS: list[tuple[str, RoutingInput, str, list[str]]] = [
    ("sensitivity.local_only.unavailable",
     routing_input(signals(local="down"), data_sensitivity="highly_confidential"), F, []),
    ("sensitivity.local_only",
     routing_input(signals(api="down", budget_exhausted=True), data_sensitivity="highly_confidential",
                   quality_tier="high"), L, []),
    ("budget.exhausted.unavailable",
     routing_input(signals(budget_exhausted=True), context_length_bucket=">32k"), F, []),
    ("budget.exhausted", routing_input(signals(budget_exhausted=True)), L, []),
    ("context.too_long.api_unavailable",
     routing_input(signals(api_quota_remaining=0), context_length_bucket=">32k"), F, []),
    ("context.too_long", routing_input(context_length_bucket=">32k"), A, []),
    ("availability.none", routing_input(signals(local_capacity_ok=False, api="down")), F, []),
    ("availability.api_unavailable", routing_input(signals(api="down"), quality_tier="high"), L, []),
    ("availability.local_unavailable", routing_input(signals(local="down")), A, []),
    ("budget.low", routing_input(budget_class="low", quality_tier="high"), L, [A]),
    ("quality.high", routing_input(quality_tier="high"), A, [L]),
    ("default.local_first", routing_input(data_sensitivity="confidential"), L, [A]),
]


@pytest.mark.parametrize(("rule_id", "policy_input", "route", "fallbacks"), RULE_SCENARIOS,
                         ids=[s[0] for s in RULE_SCENARIOS])
def test_every_rule_through_decide(
    engine: RoutingEngine, rule_id: str, policy_input: RoutingInput, route: str, fallbacks: list[str]
) -> None:
    decision = engine.decide(policy_input)
    assert (decision.rule_id, decision.route, decision.fallbacks) == (rule_id, route, fallbacks)
    assert decision.policy_version == engine.policy_version
    assert decision.signals == policy_input.runtime_signals


def test_decision_carries_the_content_version(engine: RoutingEngine, policy_dir: Path) -> None:
    assert engine.decide(routing_input()).policy_version == read_policy_dir(policy_dir).version


@pytest.mark.parametrize(
    ("policy_input", "reason", "retry_after_s"),
    [
        (routing_input(signals(local_capacity_ok=False), data_sensitivity="highly_confidential"),
         "no_route_available", 30.0),
        (routing_input(data_sensitivity="highly_confidential", context_length_bucket=">32k"),
         "invalid_request", None),
        (routing_input(signals(budget_exhausted=True), context_length_bucket=">32k"), "budget_exhausted", 3600.0),
        (routing_input(signals(api_quota_remaining=0), context_length_bucket=">32k"), "rate_limited", 60.0),
        (routing_input(signals(local="down", api="down")), "no_route_available", 30.0),
    ],
)
def test_refusals_say_why_and_when_to_retry(
    engine: RoutingEngine, policy_input: RoutingInput, reason: str, retry_after_s: float | None
) -> None:
    verdict = engine.evaluate(policy_input)
    assert verdict.decision.route == F
    assert (verdict.reason, verdict.retry_after_s) == (reason, retry_after_s)


def test_routed_decisions_have_no_refusal_reason(engine: RoutingEngine) -> None:
    verdict = engine.evaluate(routing_input())
    assert (verdict.reason, verdict.retry_after_s) == (None, None)


def test_default_signals_mean_everything_available(engine: RoutingEngine) -> None:
    policy_input = RoutingInput(data_sensitivity="public", usecase_class="coding", tenant="t",
                                business_unit="b", user_role="r", routes=TWO_ROUTES)
    assert policy_input.runtime_signals == RuntimeSignals()
    assert engine.decide(policy_input).rule_id == "default.local_first"


# --- reload ---------------------------------------------------------------------------------


def _edit_data(policy_dir: Path, **changes: object) -> None:
    path = policy_dir / "data.json"
    data = json.loads(path.read_text())
    data["routing"].update(changes)
    path.write_text(json.dumps(data))


def test_data_edit_reloads_with_new_version_and_threshold(engine: RoutingEngine, policy_dir: Path) -> None:
    medium = routing_input(context_length_bucket="8-32k")
    before = engine.decide(medium)
    assert before.rule_id == "default.local_first"

    _edit_data(policy_dir, class_order={"chat": ["high", "standard"]})
    assert engine.reload() is True

    after = engine.decide(medium)
    assert after.policy_version != before.policy_version
    assert after.policy_version == read_policy_dir(policy_dir).version
    assert (after.rule_id, after.route, after.fallbacks) == ("default.local_first", A, [L])
    assert engine.reload() is False  # unchanged content, nothing to do


def test_file_change_is_picked_up_by_decide_itself(policy_dir: Path) -> None:
    engine = RoutingEngine(RouterSettings(policy_dir=policy_dir, reload_interval_s=0))
    secret = routing_input(data_sensitivity="confidential", quality_tier="high")
    assert engine.decide(secret).route == A
    _edit_data(policy_dir, external_allowed_sensitivities=["public", "internal"])
    assert engine.decide(secret).rule_id == "sensitivity.local_only"


@pytest.mark.parametrize(
    ("file_name", "text"),
    [
        ("routing.rego", "package stellwerk.routing\n\ndecision := {\n"),  # syntax error
        ("data.json", "{not json"),
    ],
)
def test_broken_edit_keeps_the_last_good_version(
    engine: RoutingEngine, policy_dir: Path, file_name: str, text: str
) -> None:
    good = engine.policy_version
    (policy_dir / file_name).write_text(text)
    assert engine.reload() is False
    assert engine.last_error
    decision = engine.decide(routing_input())
    assert (decision.policy_version, decision.rule_id) == (good, "default.local_first")


def test_push_stays_in_force_until_the_directory_changes(
    engine: RoutingEngine, policy_dir: Path, tmp_path: Path
) -> None:
    pushed_dir = tmp_path / "pushed"
    pushed_dir.mkdir()
    for item in policy_dir.iterdir():
        (pushed_dir / item.name).write_bytes(item.read_bytes())
    _edit_data(pushed_dir, fallback_classes={"standard": ["standard"], "high": ["high"]})
    source = read_policy_dir(pushed_dir)

    engine.replace(source)
    assert engine.reload() is False  # the unchanged directory does not undo the push
    decision = engine.decide(routing_input())
    assert (decision.policy_version, decision.fallbacks) == (source.version, [])

    _edit_data(policy_dir, class_order={"chat": ["high", "standard"]})  # a later file edit wins
    assert engine.reload() is True
    assert engine.policy_version == read_policy_dir(policy_dir).version


def test_broken_push_is_refused_and_the_old_policy_stays(engine: RoutingEngine, policy_dir: Path) -> None:
    good = engine.policy_version
    source = read_policy_dir(policy_dir)
    broken = type(source)(modules={"routing.rego": "package stellwerk.routing\ndecision := {"},
                          data=source.data, version="sha256:00000000000000ff")
    with pytest.raises(PolicyError):
        engine.replace(broken)
    assert engine.policy_version == good


# --- failing closed -------------------------------------------------------------------------


def test_missing_policy_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RoutingUnavailable):
        RoutingEngine(RouterSettings(policy_dir=tmp_path / "nowhere"))


def test_incomplete_data_yields_no_decision(policy_dir: Path) -> None:
    data = json.loads((policy_dir / "data.json").read_text())
    del data["routing"]["class_order"]
    (policy_dir / "data.json").write_text(json.dumps(data))
    engine = RoutingEngine(RouterSettings(policy_dir=policy_dir))
    with pytest.raises(RoutingUnavailable) as info:
        engine.decide(routing_input())
    assert info.value.code == "policy_unavailable"


def test_malformed_class_order_yields_no_decision(policy_dir: Path) -> None:
    _edit_data(policy_dir, class_order=["standard", "high"])  # must map operations to class lists
    with pytest.raises(RoutingUnavailable):
        RoutingEngine(RouterSettings(policy_dir=policy_dir)).decide(routing_input())


@pytest.mark.parametrize(
    "decision",
    [
        '{"route": "elsewhere", "rule_id": "x", "fallbacks": []}',  # not a route
        '{"route": "local-vllm", "rule_id": "has space", "fallbacks": []}',  # not an identifier
        '{"route": "local-vllm", "rule_id": "x", "fallbacks": ["local-vllm"]}',  # falls back to itself
        '{"route": "fallback-policy", "rule_id": "x", "fallbacks": []}',  # refusal without reason
        '{"route": "local-vllm", "rule_id": "x"}',  # fallbacks missing
        '"local-vllm"',  # not an object
    ],
)
def test_malformed_policy_output_fails_closed(policy_dir: Path, decision: str) -> None:
    (policy_dir / "routing.rego").write_text(f"package stellwerk.routing\n\ndecision := {decision}\n")
    engine = RoutingEngine(RouterSettings(policy_dir=policy_dir))
    with pytest.raises(RoutingUnavailable):
        engine.decide(routing_input())


def test_push_check_refuses_a_policy_failing_its_own_cases(policy_dir: Path) -> None:
    _edit_data(policy_dir, external_allowed_sensitivities=["public"])
    with pytest.raises(PolicyError, match="policy test"):
        check_policy_dir(policy_dir)


def test_input_from_a_request_takes_identity_from_the_envelope(engine: RoutingEngine) -> None:
    envelope = Envelope(request_id="r1", correlation_id="c1", deadline=deadline_in(30), tenant="clinic",
                        business_unit="cardiology", user_role="physician", usecase_class="summarization")
    attributes = effective_attributes(RequestAttributes(data_sensitivity="internal"),
                                      dlp_sensitivity="highly_confidential", context_length_bucket="8-32k")
    policy_input = RoutingInput.from_request(envelope, attributes, signals(), TWO_ROUTES)
    assert (policy_input.tenant, policy_input.usecase_class) == ("clinic", "summarization")
    assert engine.decide(policy_input).rule_id == "sensitivity.local_only"
