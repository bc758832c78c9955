"""Values of the KV buckets (DESIGN.md §3), typed once: writers and readers share these.

Key layout
- ``budgets``:         ``totals.<scope>.<id>`` → running totals (finops' own bookkeeping)
                       ``state.<scope>.<id>``  → ``BudgetState`` (what the router enforces)
- ``provider_health``: ``<route>.<worker_id>`` → ``ProviderHealthState`` (one per inference worker)
- ``capacity``:        ``<deployment>``        → ``CapacityState`` (from the vLLM /metrics)
                       ``quota.<route>``       → ``QuotaState`` (tokens per quota window of external APIs)
- ``keys``:            ``<key_id>``            → ``KeyRecord`` (API keys as data, issue 14; hashes only)
- ``policies``:        ``bundle.<policy>.<hash>`` → ``PolicyBundle`` (every version ever pushed)
                       ``current.<policy>``    → ``PolicyChange`` with its bundle (what workers run)
                       ``log.<policy>.<ns>``   → ``PolicyChange`` (push / rollback history)
- ``rollouts``:        ``<route>.<variant>``   → ``RolloutState`` (a canary rolled back, issue 17)
- ``guard_reviews``:   ``review.<id>``         → ``GuardReview`` (a guard ``review`` for a human, issue 16)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from schemas.events import utcnow
from schemas.vocabulary import (
    BudgetClass,
    DataSensitivity,
    Direction,
    Ident,
    ProviderHealth,
    QualityTier,
    Route,
    Sha256,
    Timestamp,
    UsecaseClass,
)

# end_user (issue 14): one pseudonymous end user (``Envelope.end_user``, a per-tenant keyed hash).
BudgetScope = Literal["tenant", "business_unit", "usecase", "endpoint", "end_user"]
BudgetPeriod = Literal["day", "month"]
BudgetLevel = Literal["ok", "warn", "exhausted"]
BudgetAction = Literal["none", "downgrade", "force_local", "block_noncritical"]


class BudgetState(msgspec.Struct, kw_only=True):
    budget_id: Ident
    scope: BudgetScope
    scope_id: Ident
    period: BudgetPeriod
    period_start: Timestamp
    limit: float
    consumed: float
    currency: Ident = "EUR"
    level: BudgetLevel = "ok"
    action: BudgetAction = "none"  # the action in force now (``none`` until a threshold acts)
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)


class ProviderHealthState(msgspec.Struct, kw_only=True):
    route: Route
    worker_id: Ident
    state: ProviderHealth
    consecutive_failures: int = 0
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)


class CapacityState(msgspec.Struct, kw_only=True):
    deployment: Ident
    route: Route
    requests_running: float
    requests_waiting: float
    kv_cache_usage: float
    ok: bool
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)


class QuotaState(msgspec.Struct, kw_only=True):
    route: Route
    limit: float  # tokens per window
    used: float
    window: int  # index of the window the count belongs to: epoch seconds // window_s
    window_s: float = 60.0
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used)


KeySource = Literal["config", "cli"]


class KeyRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An API key as the mesh stores it (KV ``keys``, issue 14): its SHA-256, never the key.

    The attribute fields are ``services.runtime.settings.ApiKey``'s, so a key of the YAML
    config imports as it is. A key is valid while not ``revoked`` and before ``expires_at``;
    a rotated key gets an ``expires_at`` at the end of its grace period and names its
    successor in ``rotated_to``."""

    key_id: Ident
    key_sha256: Sha256
    tenant: Ident
    business_unit: Ident
    user_role: Ident
    usecase_class: UsecaseClass = "chat"
    budget_class: BudgetClass = "standard"
    max_budget_class: BudgetClass = "standard"
    quality_tier: QualityTier = "standard"
    max_quality_tier: QualityTier = "high"
    sensitivity_floor: DataSensitivity = "internal"
    pseudonymize: bool = False
    # May the application forward its end user (``X-Stellwerk-End-User``)? Issue 14.
    forward_end_user: bool = False
    expires_at: Timestamp | None = None
    created_by: Ident
    created_at: Timestamp = msgspec.field(default_factory=utcnow)
    source: KeySource = "cli"
    revoked: bool = False
    revoked_by: Ident | None = None
    revoked_at: Timestamp | None = None
    rotated_from: Ident | None = None
    rotated_to: Ident | None = None
    # The first key id of a rotation chain: limits count per lineage (a rotation resets none).
    lineage: Ident | None = None
    # The person who holds the key as single sign-on names them (``oidc:<sub>``, review 1a): four
    # eyes counts this key and that person's token as one approver. Carried over by a rotation.
    owner: Ident | None = None

    def valid(self, now: datetime | None = None) -> bool:
        return not self.revoked and (self.expires_at is None or (now or utcnow()) < self.expires_at)


PolicyName = Literal["routing", "sensitivity", "tools", "guard"]
PolicyAction = Literal["push", "rollback"]


class PolicyBundle(msgspec.Struct, kw_only=True):
    """KV ``policies`` ``bundle.<policy>.<hash>``: one policy version, stored once by its
    content hash (``version`` = ``sha256:`` + the first 16 hex digits over its files), kept
    forever so every ``policy_version`` in the audit trail resolves to its text."""

    policy: PolicyName
    version: Ident
    modules: dict[str, str]
    data: dict[str, Any]
    actor: Ident
    message: str
    created_at: Timestamp = msgspec.field(default_factory=utcnow)


class PolicyChange(msgspec.Struct, kw_only=True):
    """KV ``policies`` ``log.<policy>.<ns>``: who put which version in force, when and why;
    ``current.<policy>`` holds the latest change with its bundle (what workers follow)."""

    policy: PolicyName
    version: Ident
    action: PolicyAction
    actor: Ident
    message: str
    at: Timestamp = msgspec.field(default_factory=utcnow)
    bundle: PolicyBundle | None = None  # set in current.<policy>, left out of the log


class RolloutState(msgspec.Struct, kw_only=True):
    """KV ``rollouts`` ``<route>.<variant>``: this variant is rolled back (weight 0 on every
    replica) — by ``system`` when its window breached a threshold, with what was measured.
    Deleting the key (``stellwerk rollout restore``) gives the variant its weight back."""

    route: Route
    variant: Ident
    actor: Ident
    reason: Ident  # error_rate | p95_latency | operator
    requests: int = 0
    error_rate: float = 0.0
    p95_latency_ms: float = 0.0
    at: Timestamp = msgspec.field(default_factory=utcnow)


GuardReviewStatus = Literal["open", "resolved"]
# confirmed: the guard was right (an attack, a harmful answer); dismissed: a false alarm.
GuardReviewResolution = Literal["confirmed", "dismissed"]


class GuardScore(msgspec.Struct, kw_only=True):
    name: Ident
    score: float


class GuardReview(msgspec.Struct, kw_only=True):
    """KV ``guard_reviews`` ``review.<review_id>``: a guard decision ``review`` (issue 16) —
    the request went through and waits for a human's look. Metadata only, like the audit
    record it is made from: ids, rule, scores, signal names; never the text."""

    review_id: Ident  # 16 hex characters of sha256(request_id, direction)
    request_id: Ident
    correlation_id: Ident
    tenant: Ident
    business_unit: Ident
    user_role: Ident
    usecase_class: UsecaseClass
    end_user: Ident | None = None
    direction: Direction
    rule_id: Ident
    policy_version: Ident
    categories: list[GuardScore] = msgspec.field(default_factory=list)
    signals: list[Ident] = msgspec.field(default_factory=list)
    created_at: Timestamp
    status: GuardReviewStatus = "open"
    resolution: GuardReviewResolution | None = None
    resolved_by: Ident | None = None
    resolved_at: Timestamp | None = None
