"""The shared shell of every bus worker: consume a durable consumer, decode, ack or dead-letter.

Reliability lives here once, not in each service:
- explicit acks; a handler error is NAKed with backoff and redelivered up to ``max_deliver``
  times, then the message goes to ``stellwerk.v1.dlq.<service>`` with the reason and the
  request is failed for its caller — nothing is dropped silently;
- a message that does not decode as its schema goes straight to the DLQ (``malformed``);
  it never crashes the worker;
- an expired deadline fails the request instead of processing it;
- publishes carry ``Nats-Msg-Id`` = request id + stage, so a redelivered message that is
  handled twice publishes its successor only once (JetStream duplicate window).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import structlog
from faststream.middlewares.acknowledgement.config import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsSecurity, NatsUserPassword
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import trace

from schemas import subjects
from schemas.events import (
    AuditEvent,
    DeadLetter,
    Envelope,
    RequestResult,
    ResultError,
    decode,
    encode,
    envelope_fields,
)
from schemas.streams import ConsumerDef
from schemas.vocabulary import ErrorCode, ResultStatus, Stage
from services.runtime.bus import consumer_config, ensure_topology, register_worker
from services.runtime.errors import fixed_message
from services.runtime.logging import configure_logging
from services.runtime.metrics import WorkerMetrics
from services.runtime.settings import MeshSettings, PlatformConfig, load_config
from services.runtime.telemetry import configure_tracing, inject_headers

E = TypeVar("E", bound=Envelope)
Handler = Callable[[E], Awaitable[None]]

_BACKOFF_S = (0.2, 1.0, 3.0, 5.0)


def _security(settings: MeshSettings) -> NatsSecurity | None:
    """The worker's NATS user and TLS from ``STELLWERK_NATS_*`` (issue 8); None: neither."""
    tls = settings.nats_tls_context()
    if settings.nats_user:
        return NatsUserPassword(settings.nats_user, settings.nats_password_value() or "", ssl_context=tls)
    return NatsSecurity(ssl_context=tls) if tls is not None else None


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("stellwerk.faststream")
    logger.setLevel(logging.WARNING)
    return logger


class Worker:
    """One worker process of one service: a broker connection plus the publishing verbs."""

    def __init__(self, service: str, settings: MeshSettings | None = None) -> None:
        self.service = service
        self.settings = settings or MeshSettings()
        self.config: PlatformConfig = load_config(self.settings.config_file)
        self.log: structlog.stdlib.BoundLogger = configure_logging(service, self.settings.log_level)
        self.tracer_provider = configure_tracing(service)
        self.tracer = trace.get_tracer(f"stellwerk.{service}")
        self.metrics = WorkerMetrics(service)
        self.broker = NatsBroker(
            self.settings.nats_servers(),
            security=_security(self.settings),  # per-service user and TLS (issue 8)
            inbox_prefix=self.settings.nats_inbox_prefix(),
            name=f"stellwerk-{service}",
            middlewares=[NatsTelemetryMiddleware(tracer_provider=self.tracer_provider)],
            logger=_quiet_logger(),
            log_level=logging.DEBUG,  # FastStream's per-message lines stay below our level
            max_reconnect_attempts=-1,
            graceful_timeout=10.0,
        )
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._kv: dict[str, KeyValue] = {}
        self._background: list[asyncio.Task[None]] = []

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "worker not started"
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "worker not started"
        return self._js

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    def watch(self, bucket: str, apply: Callable[[str, bytes | None], None], keys: str = ">") -> None:
        """Keep local state current from a KV bucket: ``apply(key, value)`` on every change
        (value None when deleted). Runs in the background; request handlers never wait on it."""

        async def start() -> None:
            watcher = await (await self.kv(bucket)).watch(keys)

            async def follow() -> None:
                async for entry in watcher:
                    if entry is None:  # end of the initial snapshot
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    apply(entry.key, None if deleted else entry.value)

            self._background.append(asyncio.create_task(follow(), name=f"watch-{bucket}"))

        self._on_start.append(start)

    def every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` periodically in the background; a failing run is logged, not fatal."""

        async def loop() -> None:
            while True:
                try:
                    await job()
                except Exception as exc:  # noqa: BLE001 - periodic jobs must keep running
                    self.log.warning("periodic_job_failed", job=job.__name__, error=type(exc).__name__)
                await asyncio.sleep(interval_s)

        async def start() -> None:
            self._background.append(asyncio.create_task(loop(), name=f"every-{job.__name__}"))

        self._on_start.append(start)

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_start.append(hook)

    # --- consuming -------------------------------------------------------------------------

    def consume(self, consumer: ConsumerDef, event_type: type[E], handler: Handler[E]) -> None:
        """Bind a handler to a durable pull consumer with the standard ack/DLQ discipline."""

        async def on_message(msg: NatsMessage) -> None:
            await self._process(consumer, msg, event_type, handler)

        self.broker.subscriber(
            consumer.filter_subject,
            stream=JStream(consumer.stream, declare=False),
            durable=consumer.durable,
            pull_sub=PullSub(batch_size=self.settings.batch_size, timeout=5.0),
            config=consumer_config(consumer, self.settings),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            max_workers=self.settings.batch_size,
            title=consumer.durable,
            inbox_prefix=f"{self.settings.nats_inbox_prefix()}.".encode(),  # issue 8: per-user inbox
        )(on_message)

    async def _process(
        self, consumer: ConsumerDef, msg: NatsMessage, event_type: type[E], handler: Handler[E]
    ) -> None:
        started = time.perf_counter()
        outcome = await self._handle(consumer, msg, event_type, handler)
        labels = (self.service, consumer.stage)
        self.metrics.messages.labels(*labels, outcome).inc()
        self.metrics.duration.labels(*labels).observe(time.perf_counter() - started)

    async def _handle(
        self, consumer: ConsumerDef, msg: NatsMessage, event_type: type[E], handler: Handler[E]
    ) -> str:
        raw = msg.raw_message
        deliveries = raw.metadata.num_delivered if raw.metadata else 1
        if deliveries > 1:
            self.metrics.redeliveries.labels(self.service, consumer.stage).inc()
        try:
            event = decode(msg.body, event_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            # Validation messages name the field and the expected type, never the value.
            await self.dead_letter(msg, reason="malformed", detail=str(exc), deliveries=deliveries)
            await msg.ack()
            return "malformed"
        log = self.log.bind(request_id=event.request_id, correlation_id=event.correlation_id)
        trace.get_current_span().set_attributes(
            {"stellwerk.request_id": event.request_id, "stellwerk.stage": consumer.stage}
        )
        if consumer.in_request_path and event.expired():
            await self.fail(event, "deadline_exceeded", stage=consumer.stage)
            await msg.ack()
            return "expired"
        try:
            await handler(event)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
            error = type(exc).__name__
            if deliveries >= self.settings.max_deliver:
                log.error("dead_lettered", consumer=consumer.durable, error=error, deliveries=deliveries)
                await self.dead_letter(msg, reason="max_deliver_exceeded", detail=error, deliveries=deliveries)
                if consumer.in_request_path:
                    await self.fail(event, "internal_error", stage=consumer.stage)
                await msg.ack()
                return "dead_lettered"
            log.warning("handler_failed", consumer=consumer.durable, error=error, deliveries=deliveries)
            await msg.nack(delay=_BACKOFF_S[min(deliveries, len(_BACKOFF_S)) - 1])
            return "retried"
        await msg.ack()
        return "ok"

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, subject: str, event: msgspec.Struct, msg_id: str) -> None:
        """Publish to a stream, idempotently: the same ``msg_id`` is stored only once."""
        headers = inject_headers({"Nats-Msg-Id": msg_id})
        await self.js.publish(subject, encode(event), headers=headers)

    async def reply(self, result: RequestResult) -> None:
        """Deliver the final result to whoever waits on ``result.<request_id>`` (core NATS)."""
        await self.nc.publish(
            subjects.result(result.request_id), encode(result), headers=inject_headers({})
        )

    async def fail(
        self,
        event: Envelope,
        code: ErrorCode,
        *,
        stage: Stage,
        retry_after_s: float | None = None,
        rule_id: str | None = None,
        status: ResultStatus = "failed",
        already_audited: bool = False,
        **result_fields: object,
    ) -> None:
        """End a request early with a typed error; audit it unless the decision already was."""
        error = ResultError(
            code=code,
            stage=stage,
            message=fixed_message(code),
            retry_after_s=retry_after_s,
            rule_id=rule_id,
        )
        result = RequestResult(
            **envelope_fields(event),
            status="blocked" if status == "blocked" else "failed",
            error=error,
            **result_fields,  # type: ignore[arg-type]
        )
        await self.reply(result)
        if already_audited:
            return
        await self.audit(
            AuditEvent(
                **envelope_fields(event),
                stage=stage,
                outcome=result.status,
                reason_code=code,
                rule_id=rule_id,
            )
        )

    async def audit(self, event: AuditEvent) -> None:
        msg_id = f"audit:{event.request_id}:{event.stage}:{event.outcome}"
        await self.publish(subjects.audit(event.stage), event, msg_id)

    async def dead_letter(self, msg: NatsMessage, *, reason: str, detail: str, deliveries: int) -> None:
        raw = msg.raw_message
        letter = DeadLetter(
            service=self.service,
            subject=raw.subject,
            reason=reason,
            detail=detail[:500],
            deliveries=deliveries,
            payload=msg.body,
            headers={k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")},
        )
        seq = raw.metadata.sequence.stream if raw.metadata else 0
        await self.publish(subjects.dlq(self.service), letter, f"dlq:{self.service}:{raw.subject}:{seq}")

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, ensure topology, start consuming, announce; stop cleanly on SIGINT/SIGTERM."""
        self._nc = await self.broker.connect()
        self._js = self._nc.jetstream()
        await ensure_topology(self._js, self.settings)
        for hook in self._on_start:
            await hook()
        await self.broker.start()
        self.metrics.serve(self.settings.metrics_port)
        service = await register_worker(self._nc, self.service, self.settings.worker_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.log.info("worker_started", worker_id=self.settings.worker_id)
        await stop.wait()
        for task in self._background:
            task.cancel()
        await service.stop()
        await self.broker.stop()
        self.tracer_provider.shutdown()


def run_worker(service: str, build: Callable[[Worker], None]) -> None:
    """Entry point of every ``python -m services.<name>``: build the contract, then serve."""
    worker = Worker(service)
    build(worker)
    asyncio.run(worker.run())
