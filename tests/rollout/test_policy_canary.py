"""A routing-policy canary (issue 17): a stored policy version deciding a share of requests,
judged against the policy in force, rolled back on a breach (no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.events import RequestRouted, RuntimeSignals
from services.router.decision import RouterSettings, RoutingEngine
from services.router.handlers import route_request
from services.router.policy_canary import PolicyCanaryState
from services.router.policy_store import SHIPPED_POLICY_DIR
from services.runtime.effects import Fail, Publish
from services.runtime.rollouts import PolicyCanary, in_policy_canary
from tests.rollout.test_rollout_handlers import CANARY, screened

DEFAULT_RULE = '} else := {"id": "default.local_first", "route": preferred.name}'


def policy_copy(tmp_path: Path, name: str, rego: tuple[str, str] | None = None, drop: str | None = None) -> Path:
    directory = tmp_path / name
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    if rego is not None:
        path = directory / "routing.rego"
        text = path.read_text()
        assert rego[0] in text
        path.write_text(text.replace(*rego))
    if drop is not None:
        data = json.loads((directory / "data.json").read_text())
        del data["routing"][drop]
        (directory / "data.json").write_text(json.dumps(data))
    return directory


def canary_of(directory: Path, weight: float = 50, **rollback: object) -> PolicyCanaryState:
    engine = RoutingEngine(RouterSettings(policy_dir=directory, reload_interval_s=3600))
    spec = PolicyCanary.model_validate({"version": engine.policy_version, "weight": weight,
                                        "rollback": {"min_requests": 5, "max_error_rate": 0.2, **rollback}})
    return PolicyCanaryState(spec, engine)


@pytest.fixture(scope="module")
def stable() -> RoutingEngine:
    return RoutingEngine(RouterSettings(reload_interval_s=3600))


def route(stable: RoutingEngine, canary: PolicyCanaryState, request_id: str) -> Publish | Fail:
    effects = route_request(stable, RuntimeSignals(), screened(request_id), stable.settings.tokenizer_encoding,
                            config=CANARY, policy_canary=canary)
    assert isinstance(effects[0], Publish | Fail)
    return effects[0]


def test_the_canary_decides_its_share_with_its_own_version(tmp_path: Path, stable: RoutingEngine) -> None:
    # Same rules, another data order: a different version that routes these requests alike.
    canary = canary_of(policy_copy(tmp_path, "same", rego=("# --- fallbacks", "# --- fallbacks (v2)")))
    assert canary.engine.policy_version != stable.policy_version
    versions = set()
    for i in range(40):
        first = route(stable, canary, f"req{i}")
        assert isinstance(first, Publish) and isinstance(first.event, RequestRouted)
        record = first.event.trail[-1]
        if in_policy_canary(canary.spec, f"req{i}"):
            assert first.event.routing.policy_version == canary.engine.policy_version
            assert record.attributes["policy_variant"] == "canary"
            assert record.attributes["stable_route"] == first.event.routing.route
        else:
            assert first.event.routing.policy_version == stable.policy_version
            assert "policy_variant" not in record.attributes
        versions.add(first.event.routing.policy_version)
    assert versions == {stable.policy_version, canary.engine.policy_version}
    assert canary.breached() is None


def test_a_canary_refusing_what_the_policy_in_force_routes_is_rolled_back(tmp_path: Path, stable: RoutingEngine) -> None:
    canary = canary_of(policy_copy(tmp_path, "refusing", rego=(DEFAULT_RULE, DEFAULT_RULE.replace(
        "preferred.name", "refuse"))))
    refused = 0
    for i in range(40):
        effect = route(stable, canary, f"req{i}")
        if isinstance(effect, Fail):
            refused += 1
            assert effect.audits[0].attributes["policy_canary_error"] == "true"
        if canary.breached() is not None:
            break
    verdict = canary.breached()
    assert verdict is not None and refused >= 5
    reason, measured = verdict
    state = canary.state(reason, measured)
    assert state.route == "policy" and state.variant == canary.spec.version.removeprefix("sha256:")
    assert state.actor == "system" and state.error_rate == 1.0
    canary.follow(True)
    assert all(isinstance(route(stable, canary, f"later{i}"), Publish) for i in range(20))
    canary.follow(False)  # stellwerk rollout restore: judged afresh
    assert canary.breached() is None


def test_a_canary_that_cannot_decide_never_fails_the_caller(tmp_path: Path, stable: RoutingEngine) -> None:
    canary = canary_of(policy_copy(tmp_path, "broken", drop="class_order"))
    for i in range(20):
        effect = route(stable, canary, f"req{i}")
        assert isinstance(effect, Publish) and isinstance(effect.event, RequestRouted)
        assert effect.event.routing.policy_version == stable.policy_version  # the policy in force decided
    assert canary.breached() is not None  # but the canary is judged by it


def test_a_permissive_canary_never_routes_what_the_policy_in_force_refuses(tmp_path: Path,
                                                                         stable: RoutingEngine) -> None:
    # The candidate sends local-only data to an external API when no local route is up.
    leaky = '{"id": "sensitivity.local_only.unavailable", "route": "api-gpt52"}'
    canary = canary_of(policy_copy(tmp_path, "leaky", rego=(
        '{"id": "sensitivity.local_only.unavailable", "route": refuse}', leaky)), weight=100)
    no_local = RuntimeSignals(local_capacity_ok=False)
    for i in range(5):
        effects = route_request(stable, no_local, screened(f"req{i}", sensitivity="highly_confidential"),
                                stable.settings.tokenizer_encoding, config=CANARY, policy_canary=canary)
        refusal = effects[0]
        # Fail closed: refused as the policy in force says, whatever the canary would do.
        assert isinstance(refusal, Fail) and refusal.rule_id == "sensitivity.local_only.unavailable"
        record = refusal.audits[0]
        assert record.rule_id == "sensitivity.local_only.unavailable"
        assert record.policy_version == stable.policy_version
        assert record.attributes["policy_canary_error"] == "true"
        assert record.attributes["policy_canary_reason"] == "permits_refused"
        assert record.attributes["stable_route"] == "fallback-policy"
    # ...and the divergence is judged toward its rollback.
    assert canary.breached() is not None
