"""JetStream streams, durable consumers and KV buckets of the mesh (DESIGN.md §3).

Plain data: the runtime creates them idempotently at start-up; ``stellwerk status`` and
the AsyncAPI export read the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from schemas import subjects
from schemas.vocabulary import Stage

DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class StreamDef:
    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue"]
    max_age_s: float
    storage: Literal["file", "memory"] = "file"
    deny_delete: bool = False
    deny_purge: bool = False
    duplicate_window_s: float = 120.0
    description: str = ""
    replicas: int = 1  # a cluster runs 3 (STELLWERK_STREAM_REPLICAS overrides every stream)
    allow_atomic: bool = False  # JetStream atomic batch publish (the audit appender uses it)


@dataclass(frozen=True, slots=True)
class ConsumerDef:
    durable: str
    stream: str
    filter_subject: str
    service: str
    stage: Stage
    description: str = ""
    max_ack_pending: int = 256
    # Stages on the request path end expired requests and fail requests they cannot process;
    # accounting consumers (usage, audit) must process every event whatever its deadline.
    in_request_path: bool = True
    # Further subjects the same durable consumes (JetStream ``filter_subjects``).
    also_filters: tuple[str, ...] = ()

    @property
    def filter_subjects(self) -> tuple[str, ...]:
        return (self.filter_subject, *self.also_filters)


PIPELINE: Final = StreamDef(
    name="PIPELINE",
    subjects=(
        subjects.REQUEST_SUBMITTED,
        subjects.REQUEST_SCREENED,
        subjects.REQUEST_ROUTED,
        subjects.RESPONSE_GENERATED,
        subjects.RESPONSE_STREAMING,
    ),
    retention="workqueue",
    max_age_s=600.0,
    description="Requests in flight; raw content lives here only until the next stage acks.",
)
USAGE: Final = StreamDef(
    name="USAGE",
    subjects=(subjects.USAGE_ALL,),
    retention="limits",
    max_age_s=400 * DAY,
    deny_delete=True,
    description="Token, GPU-second and cost records; replayable to rebuild budgets.",
)
AUDIT: Final = StreamDef(
    name="AUDIT",
    subjects=(subjects.AUDIT_ALL,),
    retention="limits",
    max_age_s=10 * 365 * DAY,
    deny_delete=True,
    deny_purge=True,
    allow_atomic=True,
    description="Metadata-only audit events and their hash-chained records.",
)
APPROVALS: Final = StreamDef(
    name="APPROVALS",
    subjects=(subjects.TOOL_APPROVAL_ALL,),
    retention="limits",
    max_age_s=30 * DAY,
    description="Human approval requests and decisions for tool calls.",
)
DLQ: Final = StreamDef(
    name="DLQ",
    subjects=(subjects.DLQ_ALL,),
    retention="limits",
    max_age_s=14 * DAY,
    description="Messages a service could not process, with the reason.",
)
FINOPS: Final = StreamDef(
    name="FINOPS",
    subjects=(subjects.FINOPS_ALERT,),
    retention="limits",
    max_age_s=400 * DAY,
    description="Budget threshold alerts.",
)

CHUNKS: Final = StreamDef(
    name="CHUNKS",
    subjects=(subjects.CHUNK_ALL,),
    retention="limits",
    max_age_s=600.0,
    storage="memory",
    duplicate_window_s=60.0,
    description="Raw chunks of streamed answers until output screening read them (memory, 10 min).",
)

STREAMS: Final = (PIPELINE, USAGE, AUDIT, APPROVALS, DLQ, FINOPS, CHUNKS)

DLP_INPUT: Final = ConsumerDef(
    "dlp-input", "PIPELINE", subjects.REQUEST_SUBMITTED, "dlp", "dlp_input", "Screens prompts."
)
ROUTER: Final = ConsumerDef(
    "router", "PIPELINE", subjects.REQUEST_SCREENED, "router", "router", "Routes by policy."
)
INFERENCE: Final = ConsumerDef(
    "inference", "PIPELINE", subjects.REQUEST_ROUTED, "inference", "inference", "Runs the model.",
    max_ack_pending=4096,  # bounded per worker by the deployments' capacity, not here
)
DLP_OUTPUT: Final = ConsumerDef(
    "dlp-output", "PIPELINE", subjects.RESPONSE_GENERATED, "dlp", "dlp_output", "Screens answers."
)
DLP_STREAM: Final = ConsumerDef(
    "dlp-stream", "PIPELINE", subjects.RESPONSE_STREAMING, "dlp", "dlp_output", "Screens streamed answers.",
    max_ack_pending=1024,
)
FINOPS_USAGE: Final = ConsumerDef(
    "finops",
    "USAGE",
    subjects.USAGE_RECORDED,
    "finops",
    "finops",
    "Prices usage.",
    in_request_path=False,
    max_ack_pending=16_384,  # room for several workers' batches of 500
)
AUDIT_INTAKE: Final = ConsumerDef(
    "audit",
    "AUDIT",
    subjects.AUDIT_EVENTS,
    "audit",
    "audit",
    "Chains audit events.",
    in_request_path=False,
    also_filters=(subjects.AUDIT_TRAILS,),
    max_ack_pending=4096,  # room for several workers' full batches
)

CONSUMERS: Final = (DLP_INPUT, ROUTER, INFERENCE, DLP_OUTPUT, DLP_STREAM, FINOPS_USAGE, AUDIT_INTAKE)

KV_BUDGETS: Final = "budgets"
KV_PROVIDER_HEALTH: Final = "provider_health"
KV_CAPACITY: Final = "capacity"
KV_RATELIMITS: Final = "ratelimits"
KV_APPROVALS: Final = "approvals"
KV_KEYS: Final = "keys"  # API keys as data (issue 14): ``<key_id>`` → ``schemas.kv.KeyRecord``
# Policy bundles by content hash, the version in force and its history (issue 17): schemas.kv.PolicyBundle
KV_POLICIES: Final = "policies"
# Canary rollbacks in force (issue 17): ``<route>.<variant>`` → schemas.kv.RolloutState; every
# router and inference replica follows it, so a rolled-back canary gets no traffic anywhere.
KV_ROLLOUTS: Final = "rollouts"
# Guard decisions ``review`` waiting for a human (issue 16): ``review.<id>`` → schemas.kv.GuardReview,
# written by the DLP workers, listed and resolved by operators (CLI, console).
KV_GUARD_REVIEWS: Final = "guard_reviews"
KV_BUCKETS: Final = (
    KV_BUDGETS, KV_PROVIDER_HEALTH, KV_CAPACITY, KV_RATELIMITS, KV_APPROVALS, KV_KEYS, KV_POLICIES, KV_ROLLOUTS,
    KV_GUARD_REVIEWS,
)
