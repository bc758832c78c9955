"""The worker engine: one process of one service — connection, consumption, effects, discipline.

Reliability lives here once, for single and batch consumers alike:
- explicit acks; a handler error is NAKed with backoff and redelivered up to ``max_deliver``
  times, then the message goes to ``stellwerk.v1.dlq.<service>`` with the reason and the
  request is failed for its caller — nothing is dropped silently;
- a message that does not decode as its schema goes straight to the DLQ (``malformed``);
  it never crashes the worker;
- an expired deadline fails the request instead of processing it;
- publishes carry ``Nats-Msg-Id`` = request id + stage, so a redelivered message that is
  handled twice publishes its successor only once (JetStream duplicate window);
- a handler that runs long (a model call, a stream) keeps its message alive with
  in-progress acks, so the ack wait can be short and a crashed worker's message comes back
  within seconds, while a slow-but-alive call is never delivered twice.

Handlers of the request path return effects (``services.runtime.effects``); the engine
carries them out. Consumption is a flow-controlled pull (``services.runtime.consumer``) with
in-flight work bounded per consumer — by the model's capacity for inference, by a small
number for CPU-bound stages — never by a fetch batch size.

Below FastStream on purpose: profiling the mesh (docs/architecture.md, "Where the time
goes") showed its per-message layers (subscriber use case, middlewares, fast-depends,
telemetry middleware) costing more CPU than the routing decision they wrap.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import nats
import structlog
import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import propagate, trace

from schemas import subjects
from schemas.events import (
    AuditEvent,
    AuditTrail,
    DeadLetter,
    Envelope,
    RequestResult,
    encode,
)
from schemas.streams import ConsumerDef
from schemas.vocabulary import ErrorCode, ResultStatus, Stage
from services.runtime.bus import ensure_topology, log_connection_error, reconnect_options, register_worker
from services.runtime.consumer import PullConsumer
from services.runtime.effects import Effects, Fail, Publish, Record, expand, trail_of
from services.runtime.logging import configure_logging
from services.runtime.metrics import WorkerMetrics
from services.runtime.settings import MeshSettings, PlatformConfig, load_config
from services.runtime.telemetry import configure_tracing, inject_headers, tracing_enabled

E = TypeVar("E", bound=Envelope)
S = TypeVar("S", bound=msgspec.Struct)
Handler = Callable[[E], Awaitable[Effects]]

_BACKOFF_S = (0.2, 1.0, 3.0, 5.0)
_REPLY_FLUSH_S = 2  # a reply not confirmed by then: the message comes back, the reply goes again
_REPLIED_KEPT = 65_536  # request ids of confirmed replies (a redelivery comes within minutes)
# msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 inside a string.
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def decode_detail(exc: Exception) -> str:
    """Why a message did not decode, without any of its content: msgspec names the field
    and the expected type, but quotes an invalid enum or literal value ('…') and the name of
    an unknown field — those parts are elided."""
    if isinstance(exc, UnicodeDecodeError):
        return "invalid UTF-8"
    text = _QUOTED.sub("'…'", str(exc))
    if "unknown field" in text:
        return "Object contains unknown field"
    return text[:300]


def deliveries_of(msg: Msg) -> int:
    """The delivery count from the ack subject (``$JS.ACK.<stream>.<consumer>.<delivered>…``,
    two tokens later with a domain) without parsing all metadata, which costs more than most
    handlers for the first delivery — nearly all of them."""
    tokens = (msg.reply or "").split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1


@dataclass(slots=True)
class Delivery:
    """One decoded message of a batch."""

    msg: Msg
    event: Any
    deliveries: int

    @property
    def seq(self) -> int:
        return self.msg.metadata.sequence.stream


BatchHandler = Callable[[list[Delivery]], Awaitable[Sequence[Delivery]]]


class Worker:
    """One worker process of one service: a NATS connection, its consumers, the effect verbs."""

    def __init__(self, service: str, settings: MeshSettings | None = None) -> None:
        self.service = service
        self.settings = settings or MeshSettings()
        self.config: PlatformConfig = load_config(self.settings.config_file)
        self.log: structlog.stdlib.BoundLogger = configure_logging(service, self.settings.log_level)
        self.tracer_provider = configure_tracing(service)
        self.tracer = trace.get_tracer(f"stellwerk.{service}")
        self.traced = tracing_enabled()
        self.metrics = WorkerMetrics(service)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._kv: dict[str, KeyValue] = {}
        self._background: list[asyncio.Task[None]] = []
        self._consumers: list[PullConsumer] = []
        self._starts: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # id(message) -> (message, when it was last kept alive): in-progress acks of long handlers
        self._in_progress: dict[int, tuple[Msg, float]] = {}
        # Requests whose final reply this worker saw reach the server (a flush after it):
        # an ended request delivered again gets no second reply only if it is here (bounded).
        self._replied: OrderedDict[str, None] = OrderedDict()

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

    # --- consuming: one event at a time ------------------------------------------------------

    def consume(
        self, consumer: ConsumerDef, event_type: type[E], handler: Handler[E], *, max_in_flight: int | None = None
    ) -> None:
        """Bind a handler to a durable consumer; at most ``max_in_flight`` events at once."""
        decoder = msgspec.json.Decoder(event_type)
        capacity = max_in_flight or self.settings.batch_size

        async def start() -> None:
            pull: PullConsumer

            def deliver(msg: Msg) -> None:
                self._spawn(self._process(consumer, msg, decoder, handler, pull))

            pull = PullConsumer(self.nc, consumer.stream, consumer.durable, capacity, deliver,
                                heartbeat_s=self._heartbeat_s())
            self._consumers.append(pull)
            await pull.start()

        self._starts.append(start)

    def serve(
        self, subject: str, handler: Callable[[Msg], Awaitable[None]], *, queue: str, max_in_flight: int = 64
    ) -> None:
        """Core NATS request-reply (queue group): ``handler`` answers ``msg.reply`` itself."""
        slots = asyncio.Semaphore(max_in_flight)

        async def guarded(msg: Msg) -> None:
            async with slots:
                try:
                    await handler(msg)
                except Exception as exc:  # noqa: BLE001 - one bad request must not end the subscription
                    self.log.error("request_handler_failed", subject=subject, error=type(exc).__name__)

        async def on_msg(msg: Msg) -> None:
            self._spawn(guarded(msg))

        async def start() -> None:
            await self.nc.subscribe(subject, queue=queue, cb=on_msg)

        self._starts.append(start)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(
        self,
        consumer: ConsumerDef,
        msg: Msg,
        decoder: msgspec.json.Decoder[E],
        handler: Handler[E],
        pull: PullConsumer,
    ) -> None:
        started = time.perf_counter()
        self._in_progress[id(msg)] = (msg, time.monotonic())
        try:
            outcome = await self._handle(consumer, msg, decoder, handler)
        except Exception as exc:  # noqa: BLE001 - e.g. the bus went away mid-effect: redelivered later
            self.log.error("message_not_settled", consumer=consumer.durable, error=type(exc).__name__)
            outcome = "unsettled"
        finally:
            del self._in_progress[id(msg)]
            pull.release()
        self.metrics.observe(consumer.stage, outcome, time.perf_counter() - started)

    async def _handle(
        self, consumer: ConsumerDef, msg: Msg, decoder: msgspec.json.Decoder[E], handler: Handler[E]
    ) -> str:
        deliveries = deliveries_of(msg)
        if deliveries > 1:
            self.metrics.redelivered(consumer.stage)
        try:
            event = decoder.decode(msg.data)
        except _DECODE_ERRORS as exc:
            # Validation messages name the field and the expected type, never the value.
            await self.dead_letter(msg, reason="malformed", detail=decode_detail(exc), deliveries=deliveries)
            await msg.ack()
            return "malformed"
        if consumer.in_request_path and event.expired():
            await self.carry_out(event, [Fail("deadline_exceeded", consumer.stage)])
            await msg.ack()
            return "expired"
        try:
            if self.traced:
                with self.tracer.start_as_current_span(
                    f"stellwerk.{consumer.stage}",
                    context=propagate.extract(msg.headers or {}),  # continue the caller's trace
                    kind=trace.SpanKind.CONSUMER,
                    attributes={"stellwerk.request_id": event.request_id, "stellwerk.stage": consumer.stage},
                ):
                    await self.carry_out(event, await handler(event))
            else:
                await self.carry_out(event, await handler(event))
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
            return await self._retry_or_dead_letter(consumer, msg, event, type(exc).__name__, deliveries)
        await msg.ack()
        return "ok"

    async def _retry_or_dead_letter(
        self, consumer: ConsumerDef, msg: Msg, event: Envelope | None, error: str, deliveries: int
    ) -> str:
        log = self.log.bind(request_id=event.request_id if event else None, consumer=consumer.durable)
        if deliveries >= self.settings.max_deliver:
            log.error("dead_lettered", error=error, deliveries=deliveries)
            await self.dead_letter(msg, reason="max_deliver_exceeded", detail=error, deliveries=deliveries)
            if consumer.in_request_path and event is not None:
                await self.carry_out(event, [Fail("internal_error", consumer.stage)])
            await msg.ack()
            return "dead_lettered"
        log.warning("handler_failed", error=error, deliveries=deliveries)
        await msg.nak(delay=_BACKOFF_S[min(deliveries, len(_BACKOFF_S)) - 1])
        return "retried"

    def _heartbeat_s(self) -> float:
        return min(5.0, max(0.5, self.settings.ack_wait_s / 3))

    async def _keep_alive(self) -> None:
        """In-progress acks for messages handled longer than a third of the ack wait."""
        every = max(0.2, self.settings.ack_wait_s / 3)
        while True:
            await asyncio.sleep(every / 2)
            now = time.monotonic()
            for key, (msg, since) in list(self._in_progress.items()):
                if now - since >= every:
                    self._in_progress[key] = (msg, now)
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    # --- consuming: batches ------------------------------------------------------------------

    def consume_batch(
        self,
        consumer: ConsumerDef,
        decode_one: Callable[[Msg], Any],
        handler: BatchHandler,
        *,
        batch_size: int,
        linger_s: float = 0.0,
        on_unsettled: Callable[[], None] | None = None,
    ) -> None:
        """Bind a batch handler: it gets up to ``batch_size`` decoded deliveries and returns the
        ones it could not handle (they are NAKed with backoff, or dead-lettered after
        ``max_deliver``); the others are acked, and the acks flushed before the next batch.
        A handler that raises is retried in place, its messages kept alive, then handed back.
        ``on_unsettled`` runs whenever acks of a handled batch may not have reached the server
        (the handler's own exactly-once bookkeeping may need to know). ``linger_s``: how long
        a batch may wait for more messages after its first, trading latency for fewer,
        larger batches."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        def arrived(msg: Msg) -> None:
            # Kept alive from arrival until settled: a long batch (or the one before it) may
            # take longer than the ack wait, and none of its messages may be redelivered.
            self._in_progress[id(msg)] = (msg, time.monotonic())
            queue.put_nowait(msg)

        async def start() -> None:
            pull = PullConsumer(self.nc, consumer.stream, consumer.durable, 2 * batch_size, arrived,
                                heartbeat_s=self._heartbeat_s())
            self._consumers.append(pull)
            await pull.start()

            async def loop() -> None:
                while True:
                    msgs = [await queue.get()]
                    await asyncio.sleep(linger_s)  # let a burst that is arriving join the batch
                    while len(msgs) < batch_size and not queue.empty():
                        msgs.append(queue.get_nowait())
                    started = time.perf_counter()
                    try:
                        outcome = await self._batch(consumer, msgs, decode_one, handler, on_unsettled)
                    except Exception as exc:  # noqa: BLE001 - the loop must survive anything
                        self.log.error("batch_failed", consumer=consumer.durable, error=type(exc).__name__)
                        outcome = "failed"
                    finally:
                        for msg in msgs:
                            self._in_progress.pop(id(msg), None)
                            pull.release()
                    self.metrics.observe(consumer.stage, outcome, time.perf_counter() - started, len(msgs))

            self._background.append(asyncio.create_task(loop(), name=f"batch-{consumer.durable}"))

        self._starts.append(start)

    async def _batch(
        self,
        consumer: ConsumerDef,
        msgs: list[Msg],
        decode_one: Callable[[Msg], Any],
        handler: BatchHandler,
        on_unsettled: Callable[[], None] | None,
    ) -> str:
        batch: list[Delivery] = []
        for msg in msgs:
            deliveries = deliveries_of(msg)
            if deliveries > 1:
                self.metrics.redelivered(consumer.stage)
            try:
                batch.append(Delivery(msg, decode_one(msg), deliveries))
            except _DECODE_ERRORS as exc:  # names the field, never the value
                await self.dead_letter(msg, reason="malformed", detail=decode_detail(exc), deliveries=deliveries)
                await msg.ack()
        failed: Sequence[Delivery] = []
        if batch:
            attempts = max(1, self.settings.max_deliver)
            for attempt in range(attempts):
                try:
                    failed = await handler(batch)
                    break
                except Exception as exc:  # noqa: BLE001 - retried in place, then handed back
                    self.log.warning("batch_handler_failed", consumer=consumer.durable,
                                     error=type(exc).__name__, attempt=attempt + 1)
                    failed = batch
                    if attempt + 1 == attempts:
                        break
                    await self._touch(batch)
                    await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                    await self._touch(batch)
        handed_back = {id(d.msg) for d in failed}
        for delivery in failed:
            await self._retry_or_dead_letter(consumer, delivery.msg, None, "batch_failed", delivery.deliveries)
        for delivery in batch:
            if id(delivery.msg) not in handed_back:
                await delivery.msg.ack()
        try:
            await self.nc.flush(timeout=5)
        except (nats.errors.Error, TimeoutError, OSError):
            if on_unsettled is not None:
                on_unsettled()
        if failed and on_unsettled is not None:
            on_unsettled()
        return "retried" if failed else "ok"

    async def _touch(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            with contextlib.suppress(nats.errors.Error):
                await delivery.msg.in_progress()

    # --- carrying out effects ----------------------------------------------------------------

    async def carry_out(self, event: Any, effects: Effects) -> None:
        """Stored effects first, concurrently; replies only once all of them are acknowledged.

        A request's ending is recorded under a message id of its own: if the stream reports
        the trail as a duplicate, this request was already ended by an earlier delivery (a
        redelivery, or the same request published twice) and its caller already has a
        result — no second reply."""
        stored, replies = expand(event, effects)
        if len(stored) == 1:
            fresh = [await self._store(stored[0])]
        elif stored:
            fresh = list(await asyncio.gather(*(self._store(effect) for effect in stored)))
        else:
            fresh = []
        ended_before = any(
            not new for effect, new in zip(stored, fresh, strict=True) if isinstance(effect, Record)
        )
        if ended_before:
            # Replied before, unless that delivery's connection died between storing the trail
            # and the reply reaching the server (a failover): then the caller still waits, and
            # the reply goes out now. A reply confirmed by this worker is never sent twice.
            replies = [r for r in replies if r.result.request_id not in self._replied]
        if not replies:
            return
        # Claimed before the reply goes out, so a copy of the request handled concurrently
        # (two deliveries at once) does not reply too; released if the reply is not confirmed.
        for effect in replies:
            self._replied[effect.result.request_id] = None
        while len(self._replied) > _REPLIED_KEPT:
            self._replied.popitem(last=False)
        try:
            for effect in replies:
                await self.reply(effect.result)
            # Confirmed: the server has the reply (a PING/PONG after it). If not, the message
            # is not acked, comes back, and the reply is sent again.
            await self.nc.flush(timeout=_REPLY_FLUSH_S)
        except BaseException:
            for effect in replies:
                self._replied.pop(effect.result.request_id, None)
            raise

    async def _store(self, effect: Publish | Record) -> bool:
        """Carry out one stored effect; False when the stream already had it."""
        if isinstance(effect, Publish):
            return await self.publish(effect.subject, effect.event, effect.msg_id)
        return await self.record(effect.events)

    async def publish(self, subject: str, event: msgspec.Struct, msg_id: str) -> bool:
        """Publish to a stream, idempotently: the same ``msg_id`` is stored only once.
        False when the stream already had it."""
        headers = {"Nats-Msg-Id": msg_id}
        if self.traced:
            inject_headers(headers)
        ack = await self.js.publish(subject, encode(event), headers=headers)
        return not ack.duplicate

    async def reply(self, result: RequestResult) -> None:
        """Deliver the final result to whoever waits on ``result.<request_id>`` (core NATS)."""
        headers = inject_headers({}) if self.traced else None
        await self.nc.publish(subjects.result(result.request_id), encode(result), headers=headers)

    async def record(self, events: list[AuditEvent]) -> bool:
        """Write audit events as one trail message (stage of the last event: who wrote it).
        False when this very ending was recorded before."""
        if not events:
            return True
        last = events[-1]
        msg_id = f"trail:{last.request_id}:{last.stage}:{last.outcome}:{len(events)}"
        return await self.publish(subjects.audit_trail(last.stage), AuditTrail(events=events), msg_id)

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
        """End a request early with a typed error (for callers outside the effect handlers)."""
        fail = Fail(code, stage, status, rule_id, retry_after_s, result_fields=dict(result_fields))
        if already_audited:
            _, replies = expand(event, [fail])
            for effect in replies:
                await self.reply(effect.result)
            return
        await self.carry_out(event, [fail])

    async def audit(self, event: AuditEvent) -> None:
        """One audit event on its own (services outside the request path: finops, tools)."""
        msg_id = f"audit:{event.request_id}:{event.stage}:{event.outcome}"
        await self.publish(subjects.audit(event.stage), event, msg_id)

    async def dead_letter(self, msg: Msg, *, reason: str, detail: str, deliveries: int) -> None:
        letter = DeadLetter(
            service=self.service,
            subject=msg.subject,
            reason=reason,
            detail=detail[:500],
            deliveries=deliveries,
            payload=msg.data,
            headers={k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")},
        )
        seq = msg.metadata.sequence.stream if msg.reply else 0
        await self.publish(subjects.dlq(self.service), letter, f"dlq:{self.service}:{msg.subject}:{seq}")

    # --- lifecycle -------------------------------------------------------------------------

    async def _on_reconnect(self) -> None:
        self.log.warning("nats_reconnected")
        for pull in self._consumers:
            pull.reset()

    async def _on_disconnect(self) -> None:
        self.log.warning("nats_disconnected")

    async def run(self) -> None:
        """Connect, ensure topology, start consuming, announce; stop cleanly on SIGINT/SIGTERM."""
        self._nc = await nats.connect(
            self.settings.nats_servers(),
            **self.settings.nats_connect_options(),
            name=f"stellwerk-{self.service}",
            **reconnect_options(),
            error_cb=log_connection_error,
            reconnected_cb=self._on_reconnect,
            disconnected_cb=self._on_disconnect,
        )
        self._js = self._nc.jetstream()
        await ensure_topology(self._js, self.settings)
        for hook in self._on_start:
            await hook()
        for start in self._starts:
            await start()
        self._background.append(asyncio.create_task(self._keep_alive(), name="keep-alive"))
        self.metrics.serve(self.settings.metrics_port)
        service = await register_worker(self._nc, self.service, self.settings.worker_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.log.info("worker_started", worker_id=self.settings.worker_id)
        await stop.wait()
        for pull in self._consumers:
            await pull.stop()
        if self._tasks:  # let handlers in flight finish (bounded): their messages get acked
            await asyncio.wait(self._tasks, timeout=10.0)
        for task in self._background:
            task.cancel()
        await service.stop()
        with contextlib.suppress(Exception):
            await self._nc.drain()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


def run_worker(service: str, build: Callable[[Worker], None]) -> None:
    """Entry point of every ``python -m services.<name>``: build the contract, then serve."""
    worker = Worker(service)
    build(worker)
    uvloop.run(worker.run())  # libuv's loop: less CPU per socket event than asyncio's


__all__ = ["BatchHandler", "Delivery", "Handler", "Worker", "deliveries_of", "run_worker", "trail_of"]
