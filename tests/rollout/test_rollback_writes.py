"""A canary's rollback holds where it breached until KV has it, and its write is retried
until it lands (review 1c, issue 17; no server)."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec

from schemas.kv import RolloutState
from services.inference.rollout import unless_rolled_back
from services.router.policy_canary import PolicyCanaryState
from services.runtime.rollouts import RolledBack, retry_delays, until_landed
from tests.rollout.test_policy_canary import canary_of, policy_copy
from tests.rollout.test_rollout_handlers import CANARY_VARIANT, routed

RECORD = msgspec.json.encode(RolloutState(route="local-vllm", variant="canary", actor="system", reason="error_rate",
                                          requests=20, error_rate=0.5))


def test_a_breach_not_yet_in_kv_is_not_lifted_by_kv_events() -> None:
    rolled_back = RolledBack()
    rolled_back.hold("local-vllm.canary")
    rolled_back.apply("api-gpt52.canary", None)  # another key restored
    rolled_back.apply("local-vllm.canary", None)  # a delete of an older record of the same key
    assert "local-vllm.canary" in rolled_back
    rolled_back.apply("local-vllm.canary", RECORD)  # the record landed: from now on KV rules
    rolled_back.apply("local-vllm.canary", None)  # stellwerk rollout restore
    assert "local-vllm.canary" not in rolled_back


def test_the_router_keeps_a_policy_canary_stopped_while_its_rollback_is_written(tmp_path: Path) -> None:
    # As the router's watch does: every KV rollouts event re-follows the canary's state.
    state: PolicyCanaryState = canary_of(policy_copy(tmp_path, "same"))
    rolled_back = RolledBack()
    rolled_back.hold(state.key)  # breached here; KV write failing
    state.follow(True)
    rolled_back.apply("local-vllm.canary", None)  # an unrelated rollouts event
    state.follow(state.key in rolled_back)
    assert state.rolled_back and not state.applies("any request")


def test_inference_sends_a_locally_rolled_back_variant_to_the_stable_deployments() -> None:
    event = routed(CANARY_VARIANT)
    assert unless_rolled_back(event, set()) is event
    stable = unless_rolled_back(event, {"local-vllm.canary"})
    assert stable.routing.variant is None and stable.routing.route == "local-vllm"
    assert unless_rolled_back(routed(None), {"local-vllm.canary"}).routing.variant is None


async def test_a_rollback_write_is_retried_until_it_lands() -> None:
    calls, errors, slept = [0], list[Exception](), list[float]()

    async def write() -> bool:
        calls[0] += 1
        if calls[0] < 4:
            raise TimeoutError
        return True

    async def sleep(s: float) -> None:
        slept.append(s)

    landed = await until_landed(write, errors.append, sleep=sleep)
    assert landed is True and calls[0] == 4
    assert [type(e) for e in errors] == [TimeoutError] * 3
    assert slept == [0.5, 1.0, 2.0]
    assert list(itertools.islice(retry_delays(), 9))[-3:] == [30.0, 30.0, 30.0]  # capped, never ends
