"""The routing decision: typed input → Rego policy → typed ``RoutingDecision``.

No I/O beyond the policy directory the engine watches. Every way the policy can fail
(does not load, does not compile, yields nothing, yields something malformed) surfaces as
``RoutingUnavailable``; the caller fails the request closed instead of guessing a route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import Envelope, RequestAttributes, RoutingDecision, RuntimeSignals
from schemas.vocabulary import (
    FALLBACK_ROUTE,
    BudgetClass,
    Capability,
    ContextLengthBucket,
    DataSensitivity,
    ErrorCode,
    Ident,
    Locality,
    Operation,
    QualityTier,
    Route,
    UsecaseClass,
)
from services.router.attributes import KeyAllowances, effective_attributes
from services.router.context_length import DEFAULT_ENCODING
from services.router.policy_store import ENTRYPOINT, SHIPPED_POLICY_DIR, RouterPolicy
from services.runtime.rego import PolicyError, PolicySource
from services.runtime.settings import PlatformConfig

__all__ = [
    "ENTRYPOINT",
    "KeyAllowances",
    "RouteEntry",
    "RouterSettings",
    "RoutingEngine",
    "RoutingInput",
    "RoutingUnavailable",
    "RoutingVerdict",
    "effective_attributes",
    "route_catalogue",
]

FALLBACK_POLICY: Final[Route] = FALLBACK_ROUTE


class RouterSettings(BaseSettings):
    """Router settings from ``STELLWERK_ROUTER_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="STELLWERK_ROUTER_", extra="ignore")

    policy_dir: Path = SHIPPED_POLICY_DIR
    # How often decide() looks at the policy files (content hash); 0 checks every call.
    reload_interval_s: float = 1.0
    # tiktoken encoding of the local model, used for the context-length bucket.
    tokenizer_encoding: str = DEFAULT_ENCODING
    # Requests routed concurrently per worker (issue 12): a decision is ~1 ms of CPU, the rest
    # of a message's time is waiting for its publish to be acknowledged; 8 left the worker idle.
    max_in_flight: int = 32


class RouteEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True,
                 rename={"route_class": "class"}):
    """One route of the catalogue the policy chooses from (issue 13): its attributes from
    the config, plus this route's own capacity (local) or API quota (external) right now.
    The defaults are omitted on the wire, so the policy input stays small and stable."""

    name: Route
    route_class: Ident
    locality: Locality
    capabilities: list[Capability]
    context_tokens: int
    cost_rank: int
    capacity_ok: bool = True
    quota_ok: bool = True
    # Reserved capacity (PTU, issue 17): a fixed price already paid; ``quota_ok`` then says
    # whether its reserved throughput has room in the current window.
    reserved: bool = False


def route_catalogue(config: PlatformConfig) -> list[RouteEntry]:
    """The configured routes as policy input entries (every route available)."""
    return [
        RouteEntry(
            name=r.name,
            route_class=r.route_class,
            locality=r.locality,
            capabilities=list(r.capabilities),
            context_tokens=r.context_tokens,
            cost_rank=r.cost_rank,
            reserved=config.reserved_route(r.name),
        )
        for r in config.routes
    ]


class RoutingInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The policy's input document (issue 4). Unknown fields are rejected so a misspelt
    attribute in ``stellwerk route explain`` is an error, not a silently ignored what-if."""

    data_sensitivity: DataSensitivity
    usecase_class: UsecaseClass
    tenant: Ident
    business_unit: Ident
    user_role: Ident
    quality_tier: QualityTier = "standard"
    context_length_bucket: ContextLengthBucket = "<8k"
    budget_class: BudgetClass = "standard"
    need_websearch: bool = False
    need_tools: bool = False
    # Issue 13: what the request needs from a route, the route or class it named in
    # ``model`` (None: the policy chooses), and the routes to choose from.
    operation: Operation = "chat"
    need_json_schema: bool = False
    requested_model: Ident | None = None
    routes: list[RouteEntry] = msgspec.field(default_factory=list)
    runtime_signals: RuntimeSignals = msgspec.field(default_factory=RuntimeSignals)

    @classmethod
    def from_request(
        cls,
        envelope: Envelope,
        attributes: RequestAttributes,
        signals: RuntimeSignals,
        routes: list[RouteEntry] | None = None,
    ) -> RoutingInput:
        """Input for one request: identity from its envelope, effective ``attributes``."""
        return cls(
            data_sensitivity=attributes.data_sensitivity,
            usecase_class=envelope.usecase_class,
            tenant=envelope.tenant,
            business_unit=envelope.business_unit,
            user_role=envelope.user_role,
            quality_tier=attributes.quality_tier,
            context_length_bucket=attributes.context_length_bucket,
            budget_class=attributes.budget_class,
            need_websearch=attributes.need_websearch,
            need_tools=attributes.need_tools,
            operation=attributes.operation,
            need_json_schema=attributes.need_json_schema,
            requested_model=attributes.requested_model,
            routes=routes or [],
            runtime_signals=signals,
        )


class RoutingUnavailable(RuntimeError):
    """The routing policy could not decide; the request must be refused (fail closed)."""

    code: Final[ErrorCode] = "policy_unavailable"


class _PolicyOutput(msgspec.Struct, kw_only=True):
    """What the Rego entrypoint must return; anything else is a policy failure."""

    route: Route
    rule_id: Ident
    fallbacks: list[Route]
    reason: ErrorCode | None = None
    retry_after_s: float | None = None
    spillover_from: Route | None = None


class RoutingVerdict(msgspec.Struct, kw_only=True):
    """A decision plus, for ``fallback-policy``, why and when to retry.

    ``RoutingDecision`` (the bus schema) has no field for the refusal reason, so callers
    that publish a refusal take ``reason``/``retry_after_s`` from here.
    """

    decision: RoutingDecision
    reason: ErrorCode | None = None
    retry_after_s: float | None = None


class RoutingEngine:
    """The routing policy in force, reloaded from its directory or replaced by a push."""

    def __init__(self, settings: RouterSettings | None = None) -> None:
        self.settings = settings or RouterSettings()
        try:
            self._policy = RouterPolicy(
                self.settings.policy_dir, ENTRYPOINT, check_interval=self.settings.reload_interval_s
            )
        except (PolicyError, OSError, ValueError) as exc:
            raise RoutingUnavailable(f"routing policy did not load: {exc}") from exc

    @property
    def policy_version(self) -> str:
        return self._policy.current().version

    @property
    def last_error(self) -> str | None:
        """Why the latest reload or file check failed (the last good version stays)."""
        return self._policy.last_error

    def reload(self) -> bool:
        """Check the policy directory now; True when a new version took effect."""
        return self._policy.reload()

    def replace(self, source: PolicySource) -> None:
        """Install a pushed policy; raises PolicyError (old policy kept) if it is broken."""
        self._policy.replace(source)

    def decide(self, policy_input: RoutingInput) -> RoutingDecision:
        return self.evaluate(policy_input).decision

    def evaluate(self, policy_input: RoutingInput) -> RoutingVerdict:
        policy = self._policy.current()
        document: dict[str, Any] = msgspec.to_builtins(policy_input)
        try:
            raw = policy.evaluate(document)
            output = msgspec.convert(raw, _PolicyOutput)
        except Exception as exc:
            # Broad on purpose: PolicyError, an undefined result (regopy prints "undefined",
            # which the runtime's JSON parsing rejects with ValueError), a malformed output or
            # a native error — whatever it is, this request gets no route.
            raise RoutingUnavailable(f"routing policy {policy.version} failed: {exc!r}") from exc
        _check_invariants(output, {r.name for r in policy_input.routes})
        decision = RoutingDecision(
            route=output.route,
            rule_id=output.rule_id,
            policy_version=policy.version,
            fallbacks=output.fallbacks,
            signals=policy_input.runtime_signals,
            spillover_from=output.spillover_from,
        )
        return RoutingVerdict(decision=decision, reason=output.reason, retry_after_s=output.retry_after_s)


def _check_invariants(output: _PolicyOutput, routes: set[str]) -> None:
    """Shape rules no policy edit may break (its content is the policy tests' business):
    a route and its fallbacks come from the catalogue the policy was given."""
    if output.route == FALLBACK_POLICY:
        if output.reason is None or output.fallbacks:
            raise RoutingUnavailable(f"rule {output.rule_id}: a refusal needs a reason and no fallbacks")
        return
    if output.route not in routes:
        raise RoutingUnavailable(f"rule {output.rule_id}: {output.route!r} is not a route of the catalogue")
    if output.route in output.fallbacks or not set(output.fallbacks) <= routes:
        raise RoutingUnavailable(f"rule {output.rule_id}: fallbacks must be other routes of the catalogue")
