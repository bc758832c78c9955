"""Joining the mesh: stream/KV topology (idempotent) and worker discovery.

Every worker registers as a NATS micro service (``$SRV.PING``/``$SRV.INFO``), the standard
discovery protocol of NATS, so ``stellwerk status`` can count live workers per service.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue
from nats.micro import add_service
from nats.micro.service import Service, ServiceConfig

from schemas.streams import AUDIT, CONSUMERS, DAY, KV_BUCKETS, STREAMS, ConsumerDef, StreamDef
from services.runtime.settings import MeshSettings


def stream_config(
    definition: StreamDef, replicas: int | None = None, max_age_s: float | None = None
) -> StreamConfig:
    return StreamConfig(
        name=definition.name,
        description=definition.description,
        subjects=list(definition.subjects),
        retention=RetentionPolicy.WORK_QUEUE
        if definition.retention == "workqueue"
        else RetentionPolicy.LIMITS,
        max_age=max_age_s or definition.max_age_s,
        storage=StorageType.FILE if definition.storage == "file" else StorageType.MEMORY,
        deny_delete=definition.deny_delete,
        deny_purge=definition.deny_purge,
        duplicate_window=definition.duplicate_window_s,
        num_replicas=replicas or definition.replicas,
        allow_atomic=definition.allow_atomic or None,
    )


def consumer_config(definition: ConsumerDef, settings: MeshSettings) -> ConsumerConfig:
    """The one durable consumer configuration, used both to pre-create and to bind."""
    return ConsumerConfig(
        durable_name=definition.durable,
        filter_subject=None if definition.also_filters else definition.filter_subject,
        filter_subjects=list(definition.filter_subjects) if definition.also_filters else None,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=definition.max_ack_pending,
        description=definition.description or None,
    )


# The ack wait of every durable before in-progress acks (issue 19): a store still carrying
# it is brought to the current default by any process.
LEGACY_ACK_WAIT_S = 30.0


def wanted_consumer(have: ConsumerConfig, definition: ConsumerDef, settings: MeshSettings) -> ConsumerConfig:
    """The configuration a durable on the server should have. The ack wait and delivery limit
    are operator settings: applied by a process that has them (like the audit retention and
    the replicas), kept by one without — except the pre-issue-19 ack wait of 30 s, which any
    process lowers to the default."""
    config = consumer_config(definition, settings)
    explicit = settings.model_fields_set
    if "ack_wait_s" not in explicit and have.ack_wait is not None and abs(have.ack_wait - LEGACY_ACK_WAIT_S) > 1e-3:
        config.ack_wait = have.ack_wait
    if "max_deliver" not in explicit and have.max_deliver is not None:
        config.max_deliver = have.max_deliver
    return config


def consumer_outdated(have: ConsumerConfig, wanted: ConsumerConfig) -> bool:
    """Whether a durable differs from ``wanted`` in what may be updated in place: its filter
    (a store from an older release), ack wait, delivery limit and max ack pending."""
    def filters(config: ConsumerConfig) -> list[str]:
        return sorted(config.filter_subjects or [config.filter_subject or ""])

    return (
        filters(have) != filters(wanted)
        or abs((have.ack_wait or 0.0) - (wanted.ack_wait or 0.0)) > 1e-3
        or have.max_deliver != wanted.max_deliver
        or have.max_ack_pending != wanted.max_ack_pending
    )


async def ensure_topology(js: JetStreamContext, settings: MeshSettings | None = None) -> None:
    """Create or update every stream, durable consumer and KV bucket: the one place the
    topology is declared, safe to call from every worker, the gateway, the supervisor and the
    CLI. Consumers exist before their first worker does, so a backlog is visible (and bounded
    by the gateway) even while a stage has no worker at all.

    Operator settings (``audit_retention_days``, ``stream_replicas``) are applied only by a
    process that has them: one without (a CLI run, a worker started without the shared
    environment) keeps what the stream has, so it can never reset the AUDIT retention or
    rescale a cluster's streams to the definitions' defaults."""
    settings = settings or MeshSettings()
    for definition in STREAMS:
        retention = (
            settings.audit_retention_days * DAY
            if definition is AUDIT and settings.audit_retention_days
            else None
        )
        config = stream_config(definition, settings.stream_replicas, retention)
        try:
            info = await js.stream_info(definition.name)
        except NotFoundError:
            with contextlib.suppress(BadRequestError):  # another worker created it first
                await js.add_stream(config)
        else:
            if settings.stream_replicas is None:  # a process without the setting never rescales
                config.num_replicas = info.config.num_replicas
            if definition is AUDIT and retention is None:  # ... nor changes the audit retention
                config.max_age = info.config.max_age
            await js.update_stream(config)
    for consumer in CONSUMERS:
        try:
            info = await js.consumer_info(consumer.stream, consumer.durable)
        except NotFoundError:
            with contextlib.suppress(BadRequestError):  # another worker created it first
                await js.add_consumer(consumer.stream, consumer_config(consumer, settings))
            continue
        wanted = wanted_consumer(info.config, consumer, settings)
        if consumer_outdated(info.config, wanted):
            with contextlib.suppress(BadRequestError):
                await js.add_consumer(consumer.stream, wanted)
    for bucket in KV_BUCKETS:
        try:
            await js.key_value(bucket)
        except (NotFoundError, BadRequestError):
            with contextlib.suppress(BadRequestError):
                await js.create_key_value(
                    KeyValueConfig(bucket=bucket, history=5, replicas=settings.stream_replicas or 1)
                )



async def key_value(js: JetStreamContext, bucket: str) -> KeyValue:
    """A KV bucket for an operator command; on a mesh older than the bucket, the topology is
    created first (``ensure_topology`` never changes what an operator configured)."""
    try:
        return await js.key_value(bucket)
    except Exception:  # noqa: BLE001 - not found (older mesh) or not yet created
        await ensure_topology(js)
        return await js.key_value(bucket)

def reconnect_options() -> dict[str, Any]:
    """How a long-lived process rides out a lost server (issue 19): reconnect forever, every
    0.4–0.8 s — the period is drawn once per process, so hundreds of clients that lost the
    same server do not knock on it in lockstep (nats-py retries at a fixed period; this is
    its jitter). A server that vanishes without closing the socket (a partition, a dead
    host) is detected by two unanswered pings 5 s apart instead of nats-py's 4 minutes."""
    return {
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": random.uniform(0.4, 0.8),
        "ping_interval": 5,
        "max_outstanding_pings": 2,
    }


async def connect(
    url: str,
    name: str,
    *,
    persistent: bool = True,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Workers reconnect forever; one-shot tools (status, supervisor probes) give up at once.

    nats-py 2.16 hangs on a refused first connect when reconnection is disabled, so one-shot
    clients allow a single quick retry instead, which fails with ``NoServersError``.
    """
    settings = MeshSettings(nats_url=url)
    retry: dict[str, Any] = (
        reconnect_options() if persistent
        else {"allow_reconnect": True, "max_reconnect_attempts": 1, "reconnect_time_wait": 0.1}
    )
    callbacks: dict[str, Any] = {}
    if disconnected_cb is not None:
        callbacks["disconnected_cb"] = disconnected_cb
    if reconnected_cb is not None:
        callbacks["reconnected_cb"] = reconnected_cb
    return await nats.connect(
        settings.nats_servers(),
        **settings.nats_connect_options(),  # per-service user and TLS (issue 8)
        name=name,
        connect_timeout=3,
        **retry,
        **callbacks,
        error_cb=log_connection_error,
    )


async def log_connection_error(exc: Exception) -> None:
    # nats-py's default prints a traceback to stderr; the type name is all an operator needs.
    structlog.get_logger("stellwerk.bus").warning("nats_connection_error", error=type(exc).__name__)


async def register_worker(nc: Client, service: str, worker_id: str, version: str = "0.1.0") -> Service:
    """Announce this worker for discovery; ``stellwerk status`` pings ``$SRV.PING.<service>``."""
    return await add_service(
        nc,
        ServiceConfig(
            name=f"stellwerk-{service}",
            version=version,
            description=f"Stellwerk {service} worker",
            metadata={"worker_id": worker_id, "service": service},
        ),
    )
