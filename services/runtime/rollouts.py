"""Route variants in the platform config (issue 17): canary splits, shadow mirrors, rollback
thresholds — and the one function that turns them into a request's ``VariantChoice``.

A route may list ``variants`` (LiteLLM-like weights): each names a deployment of that route
and/or a prompt template (``<usecase>/<name>``). The router picks one per request id, after
the policy chose the route; inference calls that deployment with that template. ``shadow``
mirrors ``share`` percent of the route's requests to another deployment whose answer reaches
nobody. ``rollback`` holds the thresholds a canary variant is judged by.

Config example (docs/routing.md, "Canary, shadow and prompt templates")::

    routes:
      - name: local-vllm
        ...
        variants:
          - {name: stable, deployment: local-vllm-1, weight: 90}
          - {name: canary, deployment: local-vllm-2, weight: 10, canary: true}
        shadow: {deployment: api-gpt52-1, share: 5}
        rollback: {window_s: 60, min_requests: 20, max_error_rate: 0.2, max_p95_latency_ms: 4000}
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field

from schemas.events import AuditEvent, VariantChoice
from schemas.kv import RolloutState
from schemas.streams import KV_ROLLOUTS
from schemas.vocabulary import Stage
from services.kernel.variants import mirrored, pick
from services.runtime.metrics import LATENCY_BUCKETS

T = TypeVar("T")

if TYPE_CHECKING:
    from services.runtime.settings import PlatformConfig, RouteSpec

_IDENT = r"^[a-z0-9][a-z0-9._\-]{0,63}$"
_TEMPLATE = r"^[a-z0-9][a-z0-9_\-]{0,63}/[a-z0-9][a-z0-9._\-]{0,63}$"


class Variant(BaseModel):
    name: str = Field(pattern=_IDENT)
    deployment: str | None = None  # None: the route's deployments as usual
    prompt_template: str | None = Field(default=None, pattern=_TEMPLATE)
    weight: float = Field(ge=0)
    # Judged by the rollback thresholds and set to weight 0 everywhere when it breaches.
    canary: bool = False


class Shadow(BaseModel):
    deployment: str
    share: float = Field(default=100.0, gt=0, le=100)  # percent of the route's requests


class Rollback(BaseModel):
    """A canary is rolled back when, over the last ``window_s`` seconds and at least
    ``min_requests`` calls, its error rate or its p95 latency exceeds the threshold (None: not
    judged on it). Each inference replica judges the calls it made."""

    window_s: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=20, ge=1)
    max_error_rate: float | None = Field(default=0.2, ge=0, le=1)
    max_p95_latency_ms: float | None = Field(default=None, gt=0)


class PolicyCanary(BaseModel):
    """A pushed routing policy version (``stellwerk policy push`` without putting it... it is in
    KV ``policies`` under its hash) deciding ``weight`` percent of the requests, picked by a hash
    of the request id. Judged by ``rollback``: an error is a request the canary policy could not
    decide, or refused where the policy in force would have routed it."""

    version: str = Field(pattern=r"^sha256:[0-9a-f]{8,64}$")
    weight: float = Field(gt=0, le=100)
    rollback: Rollback = Field(default_factory=Rollback)


# KV ``rollouts`` key of a routing-policy canary: ``policy.<hex digits of its version>``.
POLICY_ROUTE: Final = "policy"


def policy_canary_key(version: str) -> str:
    return f"{POLICY_ROUTE}.{version.removeprefix('sha256:')}"


def in_policy_canary(canary: PolicyCanary, request_id: str) -> bool:
    return mirrored(canary.weight, request_id, "routing-policy")


def variant_rollback_audit(state: RolloutState, thresholds: Rollback, stage: Stage, now: datetime, worker_id: str
                           ) -> AuditEvent:
    """The automatic rollback, on the audit trail: actor ``system``, the variant, what was
    measured and the thresholds it was measured against."""
    request_id = f"rollback.{state.route}.{state.variant}.{int(now.timestamp() * 1e9)}"
    return AuditEvent(
        request_id=request_id,
        correlation_id=request_id,
        occurred_at=now,
        deadline=now,
        tenant="platform",
        business_unit=stage,
        user_role="system",
        usecase_class="chat",
        stage=stage,
        outcome="variant_rolled_back",
        rule_id=f"rollback.{state.reason}",
        route=state.route,
        attributes={
            "actor": "system",
            "variant": state.variant,
            "reason": state.reason,
            "requests": str(state.requests),
            "error_rate": repr(state.error_rate),
            "p95_latency_ms": repr(state.p95_latency_ms),
            "window_s": repr(thresholds.window_s),
            "min_requests": str(thresholds.min_requests),
            "max_error_rate": repr(thresholds.max_error_rate) if thresholds.max_error_rate is not None else "none",
            "max_p95_latency_ms": repr(thresholds.max_p95_latency_ms)
            if thresholds.max_p95_latency_ms is not None else "none",
            "worker": worker_id,
        },
    )


def check_rollouts(config: PlatformConfig) -> None:
    """Shape rules the config loader enforces: variants name deployments of their own route,
    a shadow names an existing deployment, at least one variant can take traffic."""
    routes_of = {d.name: d.route for d in config.deployments}
    for route in config.routes:
        names = [v.name for v in route.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"route {route.name}: duplicate variant names {names}")
        for variant in route.variants:
            if variant.deployment is not None and routes_of.get(variant.deployment) != route.name:
                raise ValueError(
                    f"route {route.name}: variant {variant.name} names {variant.deployment!r}, "
                    "which is no deployment of this route"
                )
        if route.variants and not any(v.weight > 0 and not v.canary for v in route.variants):
            raise ValueError(f"route {route.name}: needs a variant that is not a canary with a weight above 0")
        if route.shadow is not None and route.shadow.deployment not in routes_of:
            raise ValueError(f"route {route.name}: shadow names unknown deployment {route.shadow.deployment!r}")


def choose_variant(route: RouteSpec, request_id: str, rolled_back: Collection[str] = ()) -> VariantChoice | None:
    """The route's variant for this request (None for a route without variants). A rolled-back
    variant's weight is 0; the stable variants share the traffic among themselves."""
    if not route.variants:
        return None
    weights = [(v.name, 0.0 if v.name in rolled_back else v.weight) for v in route.variants]
    name = pick(weights, request_id, route.name)
    variant = next((v for v in route.variants if v.name == name), None)
    if variant is None:
        return None
    return VariantChoice(
        name=variant.name, deployment=variant.deployment, prompt_template=variant.prompt_template,
        canary=variant.canary,
    )


def shadow_for(route: RouteSpec, request_id: str) -> str | None:
    """The deployment this request is mirrored to, if the route has a shadow and the request
    falls in its share."""
    if route.shadow is None or not mirrored(route.shadow.share, request_id, route.name):
        return None
    return route.shadow.deployment


def canary_deployments(config: PlatformConfig) -> dict[str, set[str]]:
    """Per route, the deployments ordinary picks (a request without a variant, a fallback to the
    route) leave out: those only a canary variant names, and shadow targets on a route that has
    other deployments — they get exactly the traffic the variant split or the mirror gives them."""
    reserved: dict[str, set[str]] = {}
    for route in config.routes:
        stable = {v.deployment for v in route.variants if not v.canary}
        canary = {v.deployment for v in route.variants if v.canary and v.deployment is not None}
        reserved[route.name] = {d for d in canary - stable if d is not None}
    for route in config.routes:
        if route.shadow is None:
            continue
        target = next((d for d in config.deployments if d.name == route.shadow.deployment), None)
        if target is not None and any(
            d.name != target.name and d.name not in reserved[target.route] for d in config.deployments_for(target.route)
        ):
            reserved[target.route].add(target.name)
    return {route: names for route, names in reserved.items() if names}


class RolloutMetrics:
    """Per-variant metrics (Prometheus; labels are route, variant and enums only)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.routed = Counter(
            "stellwerk_variant_routed", "Requests given a route variant by the router",
            ["route", "variant", "canary"], registry=registry,
        )
        self.shadow_decisions = Counter(
            "stellwerk_shadow_decisions", "Shadow mirrors decided by the router (mirrored, refused_by_policy)",
            ["route", "deployment", "outcome"], registry=registry,
        )
        self.shadow_dropped = Counter(
            "stellwerk_shadow_dropped", "Shadow mirrors dropped by inference: shadow_max_in_flight reached",
            ["route", "deployment"], registry=registry,
        )
        self.calls = Counter(
            "stellwerk_variant_calls", "Model calls per route variant by outcome (ok, error); shadow calls as shadow=true",
            ["route", "variant", "shadow", "outcome"], registry=registry,
        )
        self.latency = Histogram(
            "stellwerk_variant_latency_seconds", "Model call latency per route variant",
            ["route", "variant", "shadow"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.tokens = Counter(
            "stellwerk_variant_tokens", "Tokens per route variant (kind: prompt, completion)",
            ["route", "variant", "shadow", "kind"], registry=registry,
        )
        self.cost = Counter(
            "stellwerk_variant_cost", "Estimated cost at call time per route variant, in the platform currency",
            ["route", "variant", "shadow"], registry=registry,
        )
        self.dlp = Counter(
            "stellwerk_variant_dlp_outcomes", "Output screening of shadow answers per variant (action)",
            ["route", "variant", "action"], registry=registry,
        )
        self.rollbacks = Counter(
            "stellwerk_variant_rollbacks", "Canary variants rolled back automatically (reason: error_rate, p95_latency)",
            ["route", "variant", "reason"], registry=registry,
        )
        self.rolled_back = Gauge(
            "stellwerk_variant_rolled_back", "1 while a variant is rolled back (KV rollouts), as this replica sees it",
            ["route", "variant"], registry=registry,
        )


class RolledBack:
    """The variants rolled back in the mesh, as ``<route>.<variant>`` keys, followed from KV
    ``rollouts`` (``Worker.watch(RolledBack.bucket, rolled_back.apply)``), plus the ones this
    replica rolled back itself whose record has not landed in KV yet (``hold``)."""

    bucket: Final = KV_ROLLOUTS

    def __init__(self, metrics: RolloutMetrics | None = None,
                 on_restore: Callable[[str, str], object] | None = None) -> None:
        self.keys: set[str] = set()
        # Breached here, KV write still being retried: nothing in KV may lift these (a delete
        # of an older record, a watch event of another key) until the record is seen there.
        self.pending: set[str] = set()
        self.metrics = metrics
        self.unreadable = 0
        # Called with (route, variant) when an operator restores a variant: a replica that
        # judges it starts a fresh window instead of re-judging the calls that breached.
        self.on_restore = on_restore

    def hold(self, key: str) -> None:
        """Rolled back by this replica, at once; stays so until KV has the record (then KV rules)."""
        self.keys.add(key)
        self.pending.add(key)
        self._gauge(key)

    def apply(self, key: str, value: bytes | None) -> None:
        route, _, variant = key.partition(".")
        if value is None:
            if key in self.pending:
                return  # our own breach, not yet written: a delete cannot restore it
            self.keys.discard(key)
            if self.on_restore is not None:
                self.on_restore(route, variant)
        else:
            try:
                msgspec.json.decode(value, type=RolloutState)
            except (msgspec.ValidationError, msgspec.DecodeError):
                # Unreadable: counted as rolled back all the same — a canary in doubt gets no traffic.
                self.unreadable += 1
            self.keys.add(key)
            self.pending.discard(key)
        self._gauge(key)

    def _gauge(self, key: str) -> None:
        if self.metrics is not None:
            route, _, variant = key.partition(".")
            self.metrics.rolled_back.labels(route, variant).set(1 if key in self.keys else 0)

    def __contains__(self, key: object) -> bool:
        return key in self.keys


def retry_delays(first_s: float = 0.5, cap_s: float = 30.0) -> Iterator[float]:
    """Pauses between attempts of a write that must land: doubling, capped, without end."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, cap_s)


async def until_landed(
    write: Callable[[], Awaitable[T]],
    on_error: Callable[[Exception], object],
    delays: Iterable[float] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """``write()`` again after each failure (``on_error`` told) until it returns — a rollback
    that is only logged when KV hiccups leaves the mesh on a canary that breached. Bounded per
    attempt by the pauses (``retry_delays``), not in count: it ends when it lands or its task
    is cancelled (the worker stops)."""
    for delay in delays if delays is not None else retry_delays():
        try:
            return await write()
        except Exception as exc:  # noqa: BLE001 - any failure: try again after the pause
            on_error(exc)
        await sleep(delay)
    return await write()  # the pauses ran out (a finite ``delays``): one last try, errors raised
