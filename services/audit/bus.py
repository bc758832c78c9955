"""Audit worker contract.

consumes  stellwerk.v1.audit.<stage>               (durable ``audit`` on the AUDIT stream, pulled in batches)
          stellwerk.v1.audit.trail.<stage>         (AuditTrail: a request's events, written by the stage that ended it)
publishes stellwerk.v1.audit.chain.<partition>      (AuditRecord, hash-chained, into AUDIT)
          stellwerk.v1.audit.checkpoint.<partition> (AuditCheckpoint, sealed: every N records and every T s)
          stellwerk.v1.dlq.audit                    (DeadLetter: malformed events, appends failing max_deliver times)
serves    Prometheus runbook counters on STELLWERK_AUDIT_METRICS_PORT (0 = off)

A partition is a tenant. Several audit workers may append to one partition: each atomic batch
of records states the subject sequence it expects to follow
(``Nats-Expected-Last-Subject-Sequence``), so a lost race is retried against the new tail
instead of forking the chain; ``Nats-Msg-Id`` = ``chain:<event_id>`` stops a redelivered event
from being chained twice (and beyond the 2-minute duplicate window the chain is searched).
Details in ``appender.py`` and ``intake.py``; the chain and checkpoint rules are pure modules.
"""

from __future__ import annotations

from schemas.streams import AUDIT
from services.audit.appender import Appender
from services.audit.intake import Intake
from services.audit.metrics import AuditMetrics
from services.audit.settings import AuditSettings
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    settings = AuditSettings()
    metrics = AuditMetrics()
    intake = Intake(worker, metrics, settings.batch)

    async def start() -> None:
        if settings.metrics_port:
            try:
                metrics.serve(settings.metrics_port)
            except OSError as exc:  # e.g. a second worker on one host: serve without metrics
                worker.log.warning("audit_metrics_port_unavailable", error=type(exc).__name__)
        intake.appender = Appender(
            worker.nc, worker.js, stream=AUDIT.name, metrics=metrics, sealed_by=worker.settings.worker_id,
            key=settings.key(), checkpoint_every=settings.checkpoint_every,
            atomic_batches=settings.atomic_batches,
        )

    async def seal() -> None:
        if intake.appender is not None:
            await intake.appender.seal_grown()

    worker.on_start(start)  # the engine starts consuming only after every start hook
    intake.bind()
    worker.every(settings.checkpoint_interval_s, seal)  # checkpoints of grown partitions
