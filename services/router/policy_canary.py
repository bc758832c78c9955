"""A routing-policy canary (issue 17): a pushed policy version deciding a share of requests.

The config's ``policy_canary`` names a version stored in KV ``policies`` and a weight; the
router loads it at start next to the policy in force. A request whose id hashes into the
share is decided by the canary; the policy in force decides it too (well under a millisecond)
so the two can be compared. An *error* of the canary is a request it could not decide — the
request is then decided by the policy in force, callers never pay for a broken canary — or
refused where the policy in force would have routed it, or routed where the policy in force
refuses it. The policy in force is a floor: what it refuses stays refused (fail closed). The window of those outcomes is
judged against ``policy_canary.rollback`` like a deployment canary; on a breach the router
writes ``policy.<digits>`` into KV ``rollouts`` and every router stops using the canary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from schemas.kv import RolloutState
from services.kernel.variants import BreachReason, Measured, VariantWindow, breach
from services.router.decision import RoutingEngine, RoutingInput, RoutingUnavailable, RoutingVerdict
from services.runtime.rollouts import POLICY_ROUTE, PolicyCanary, in_policy_canary, policy_canary_key

REFUSED = "fallback-policy"
# An error of the canary, as recorded on the router's record (``policy_canary_reason``):
# it could not decide, it refused what the policy in force routes, or it routed what the
# policy in force refuses (the request is refused all the same).
CanaryError = Literal["undecided", "refuses_routed", "permits_refused"]


@dataclass(slots=True)
class PolicyCanaryState:
    spec: PolicyCanary
    engine: RoutingEngine
    window: VariantWindow = field(init=False)
    rolled_back: bool = False

    def __post_init__(self) -> None:
        self.window = VariantWindow(self.spec.rollback.window_s)

    @property
    def key(self) -> str:
        return policy_canary_key(self.spec.version)

    @property
    def variant(self) -> str:
        return self.key.split(".", 1)[1]

    def follow(self, rolled_back: bool) -> None:
        """The KV state: a restored canary starts a fresh window (not the calls that breached)."""
        if self.rolled_back and not rolled_back:
            self.window = VariantWindow(self.spec.rollback.window_s)
        self.rolled_back = rolled_back

    def applies(self, request_id: str) -> bool:
        return not self.rolled_back and in_policy_canary(self.spec, request_id)

    def decide(self, policy_input: RoutingInput, stable: RoutingVerdict, now: float | None = None
               ) -> tuple[RoutingVerdict, CanaryError | None]:
        """The verdict for a request in the canary's share, and the canary's error if any.

        Fail closed: the policy in force is a floor. Where it refuses (locality, a budget hard
        stop, no capacity) the request is refused as it says, whatever the canary would do — a
        permissive candidate must not leak requests during its trial. The canary permitting
        what the policy in force refuses is a divergence and counts as an error toward its
        rollback, like refusing what the policy in force routes."""
        at = time.monotonic() if now is None else now
        try:
            verdict = self.engine.evaluate(policy_input)
        except RoutingUnavailable:
            self.window.add(at, False, 0.0)
            return stable, "undecided"
        stable_refuses = stable.decision.route == REFUSED
        canary_refuses = verdict.decision.route == REFUSED
        error: CanaryError | None = None
        if stable_refuses and not canary_refuses:
            error, verdict = "permits_refused", stable
        elif canary_refuses and not stable_refuses:
            error = "refuses_routed"
        self.window.add(at, error is None, 0.0)
        return verdict, error

    def breached(self, now: float | None = None) -> tuple[BreachReason, Measured] | None:
        if self.rolled_back:
            return None
        measured = self.window.measure(time.monotonic() if now is None else now)
        reason = breach(measured, self.spec.rollback.min_requests, self.spec.rollback.max_error_rate, None)
        return (reason, measured) if reason is not None else None

    def state(self, reason: BreachReason, measured: Measured) -> RolloutState:
        return RolloutState(route=POLICY_ROUTE, variant=self.variant, actor="system", reason=reason,
                            requests=measured.requests, error_rate=round(measured.error_rate, 4))
