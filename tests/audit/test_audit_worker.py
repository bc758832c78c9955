"""Audit workers against a real nats-server: exactly one record per event, sealed checkpoints,
safe with several workers, crashes and redeliveries; malformed input dead-lettered; counters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.events import AuditEvent, DeadLetter, decode, encode
from schemas.streams import AUDIT, DLQ
from services.audit.appender import Appender
from services.audit.checkpoint import SealKey
from services.audit.metrics import AuditMetrics
from services.audit.trail import verify_stream
from services.runtime.bus import connect, ensure_topology
from stellwerk.discovery import ping_workers
from stellwerk.supervisor import free_port
from tests.audit.helpers import event
from tests.integration.mesh import eventually

SEAL_SECRET = "test-seal-key"


class Workers:
    def __init__(self, nats_url: str, logs: Path, env: dict[str, str]) -> None:
        self.env = {**os.environ, "STELLWERK_NATS_URL": nats_url, "STELLWERK_ACK_WAIT_S": "2",
                    "STELLWERK_AUDIT_CHECKPOINT_EVERY": "100", "STELLWERK_AUDIT_SEAL_KEY": SEAL_SECRET, **env}
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        n = len(self.processes) + 1
        process = subprocess.Popen(
            [sys.executable, "-m", "services.audit"], env=self.env | {"STELLWERK_WORKER_ID": f"audit-{n}"} | (env or {}),
            stdout=(self.logs / f"audit-{n}.log").open("wb"), stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


@pytest.fixture
def workers(nats_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    group = Workers(nats_url, tmp_path, getattr(request, "param", {}))
    yield group
    group.stop()


async def ready(nc: Client, count: int) -> None:
    async def enough() -> bool:
        return len((await ping_workers(nc, 0.2)).get("audit", [])) >= count
    await eventually(enough, timeout_s=90)


async def chained(nc: Client) -> int:
    info = await nc.jetstream().stream_info(AUDIT.name, subjects_filter=subjects.AUDIT_CHAIN_ALL)
    return sum((info.state.subjects or {}).values())


async def drained(nc: Client, expected: int) -> None:
    js = nc.jetstream()

    async def done() -> bool:
        info = await js.consumer_info(AUDIT.name, "audit")
        return (info.num_pending, info.num_ack_pending) == (0, 0) and await chained(nc) >= expected
    await eventually(done, timeout_s=90)


@pytest.mark.parametrize("workers", [{}, {"STELLWERK_AUDIT_ATOMIC_BATCHES": "false"}], indirect=True,
                         ids=["atomic-batches", "per-record"])
async def test_several_workers_chain_every_event_exactly_once(nats_url: str, workers: Workers) -> None:
    workers.start()
    workers.start()
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ready(nc, 2)
    events = [event(i, tenant=f"tenant-{i % 3}", stage="dlp_input", outcome="allow") for i in range(900)]
    await asyncio.gather(*(js.publish(subjects.audit(e.stage), encode(e)) for e in events))
    # A producer retrying after its own duplicate window: the same events a second time.
    await asyncio.gather(*(js.publish(subjects.audit(e.stage), encode(e)) for e in events[:150]))
    await drained(nc, len(events))
    assert await chained(nc) == len(events), "one record per event"
    report = await verify_stream(js, AUDIT.name, key=SealKey.from_secret(SEAL_SECRET))
    assert report.ok, report
    assert {p.partition: p.records for p in report.partitions} == {f"tenant-{i}": 300 for i in range(3)}
    # A checkpoint whenever an append passes a multiple of 100 (one per append, at its head).
    assert all(p.checkpoints_matched >= 1 for p in report.partitions)
    assert report.unverifiable_seals == 0
    wrong = await verify_stream(js, AUDIT.name, key=SealKey.from_secret("not the key"))
    assert not wrong.ok and all(p.first_break and p.first_break.problem == "bad_seal" for p in wrong.partitions)
    await nc.close()


async def test_a_killed_worker_leaves_neither_gap_nor_duplicate(nats_url: str, workers: Workers) -> None:
    victim = workers.start({"STELLWERK_AUDIT_BATCH": "50"})
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ready(nc, 1)
    events = [event(i, tenant="acme", stage="router") for i in range(3000)]
    await asyncio.gather(*(js.publish(subjects.audit(e.stage), encode(e)) for e in events))

    async def halfway() -> bool:
        return await chained(nc) > 300
    await eventually(halfway, timeout_s=60)
    os.kill(victim.pid, signal.SIGKILL)  # mid-batch: stored, maybe not acked
    victim.wait()
    workers.start()
    await drained(nc, len(events))
    assert await chained(nc) == len(events)
    report = await verify_stream(js, AUDIT.name)
    assert report.ok and report.records == len(events)
    await nc.close()


async def test_redelivery_after_the_duplicate_window_is_found_in_the_chain(nats_url: str) -> None:
    """Past the stream's duplicate window only the chain knows an event was chained: search it."""
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="AUDIT", subjects=[subjects.AUDIT_ALL], duplicate_window=0.2,
                                     allow_atomic=True))
    appender = Appender(nc, js, stream="AUDIT", metrics=AuditMetrics(), sealed_by="test")
    events = [event(i) for i in range(20)]
    since = (await js.stream_info("AUDIT")).created
    assert len(await appender.append("acme", events)) == 20
    await asyncio.sleep(0.5)  # the duplicate window has passed
    assert await appender.chained_already("acme", {e.event_id for e in events[5:8]} | {"never"}, since) == {
        e.event_id for e in events[5:8]
    }
    # Within the window, the message id alone drops a second append.
    fresh = [event(100 + i) for i in range(5)]
    assert len(await appender.append("acme", fresh)) == 5
    assert await appender.append("acme", fresh) == []
    assert (await verify_stream(js, "AUDIT")).ok
    await nc.close()


async def test_malformed_event_is_dead_lettered(nats_url: str, workers: Workers) -> None:
    workers.start()
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ready(nc, 1)
    bad = encode(event(1)).replace(b'"outcome":"routed"', b'"outcome":"two words"')
    await js.publish(subjects.audit("router"), bad)
    await js.publish(subjects.audit("router"), encode(event(2)))

    async def letter() -> DeadLetter | None:
        try:
            msg = await js.get_last_msg(DLQ.name, subjects.dlq("audit"))
        except NotFoundError:
            return None
        return decode(msg.data or b"", DeadLetter)

    dead = await eventually(letter)
    assert dead.reason == "malformed" and "outcome" in dead.detail and "two words" not in dead.detail
    await drained(nc, 1)
    assert await chained(nc) == 1, "the worker keeps serving"
    await nc.close()


@pytest.fixture
def metrics_port() -> int:
    return free_port()


async def test_runbook_counters_are_exposed(nats_url: str, workers: Workers, metrics_port: int) -> None:
    workers.start({"STELLWERK_AUDIT_METRICS_PORT": str(metrics_port)})
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ready(nc, 1)
    sent: list[AuditEvent] = [
        event(1, stage="dlp_input", outcome="block", rule_id="dlp.block.pii_with_medical"),
        event(2, stage="dlp_output", outcome="block", rule_id="dlp.block.pseudonym_with_medical"),
        event(3, stage="toolgateway", outcome="denied", rule_id="tools.deny.role"),
        event(4, stage="router", outcome="refused", reason_code="budget_exhausted"),
        event(5, stage="router", outcome="routed"),
    ]
    for e in sent:
        await js.publish(subjects.audit(e.stage), encode(e))
    await drained(nc, len(sent))
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert 'stellwerk_audit_dlp_blocks_total{rule_id="dlp.block.pii_with_medical",stage="dlp_input",tenant="acme"} 1.0' in text
    assert 'stellwerk_audit_tool_denials_total{rule_id="tools.deny.role",stage="toolgateway",tenant="acme"} 1.0' in text
    assert 'stellwerk_audit_budget_breaches_total{stage="router",tenant="acme"} 1.0' in text
    assert 'stellwerk_audit_records_total{outcome="routed",stage="router"} 1.0' in text
    await nc.close()


async def test_topology_gains_atomic_batches_once_audit_appends(nats_url: str, workers: Workers) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)  # as any other worker does at start: without allow_atomic
    workers.start()
    await ready(nc, 1)
    await js.publish(subjects.audit("router"), encode(event(1)))
    await drained(nc, 1)
    assert (await js.stream_info(AUDIT.name)).config.allow_atomic
    await nc.close()
