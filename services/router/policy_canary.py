"""A routing-policy canary (issue 17): a pushed policy version deciding a share of requests.

The config's ``policy_canary`` names a version stored in KV ``policies`` and a weight; the
router loads it at start next to the policy in force. A request whose id hashes into the
share is decided by the canary; the policy in force decides it too (well under a millisecond)
so the two can be compared. An *error* of the canary is a request it could not decide — the
request is then decided by the policy in force, callers never pay for a broken canary — or
refused where the policy in force would have routed it. The window of those outcomes is
judged against ``policy_canary.rollback`` like a deployment canary; on a breach the router
writes ``policy.<digits>`` into KV ``rollouts`` and every router stops using the canary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from schemas.kv import RolloutState
from services.kernel.variants import BreachReason, Measured, VariantWindow, breach
from services.router.decision import RoutingEngine, RoutingInput, RoutingUnavailable, RoutingVerdict
from services.runtime.rollouts import POLICY_ROUTE, PolicyCanary, in_policy_canary, policy_canary_key


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
               ) -> tuple[RoutingVerdict, bool]:
        """The canary's verdict (or the stable one when it cannot decide) and whether this
        counts as an error of the canary."""
        try:
            verdict = self.engine.evaluate(policy_input)
        except RoutingUnavailable:
            self.window.add(time.monotonic() if now is None else now, False, 0.0)
            return stable, True
        error = verdict.decision.route == "fallback-policy" and stable.decision.route != "fallback-policy"
        self.window.add(time.monotonic() if now is None else now, not error, 0.0)
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
