"""FinOps and audit workers against a real nats-server: idempotent, chained, dead-lettering."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.events import (
    AuditEvent,
    AuditRecord,
    DeadLetter,
    TokenUsage,
    UsageRecorded,
    deadline_in,
    decode,
    encode,
)
from schemas.streams import DLQ, KV_BUDGETS
from services.audit.chain import verify_chain
from services.finops.ledger import Totals
from services.runtime.bus import connect, ensure_topology
from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.discovery import ping_workers
from tests.integration.mesh import eventually, stored


@pytest.fixture
def workers(nats_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "STELLWERK_NATS_URL": nats_url, "STELLWERK_CONFIG_FILE": str(DEFAULT_CONFIG),
           "STELLWERK_ACK_WAIT_S": "2"}
    processes = [
        subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env | {"STELLWERK_WORKER_ID": f"{name}-{i}"},
                         stdout=(tmp_path / f"{name}-{i}.log").open("wb"), stderr=subprocess.STDOUT)
        for name, i in (("finops", 1), ("finops", 2), ("audit", 1), ("audit", 2))
    ]
    yield processes
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=10)


async def _ready(nats_url: str) -> None:
    nc = await connect(nats_url, "probe", persistent=False)
    try:
        async def both() -> bool:
            found = await ping_workers(nc, 0.2)
            return len(found.get("finops", [])) == 2 and len(found.get("audit", [])) == 2
        await eventually(both, timeout_s=60)
    finally:
        await nc.close()


def usage(request_id: str, tenant: str = "acme") -> UsageRecorded:
    return UsageRecorded(
        request_id=request_id, correlation_id=request_id, deadline=deadline_in(-60), tenant=tenant,
        business_unit="claims", user_role="analyst", usecase_class="chat", call_id=f"{request_id}.api-gpt52",
        route="api-gpt52", deployment="api-gpt52-1", model="m",
        usage=TokenUsage(prompt_tokens=10, completion_tokens=5), ttft_ms=1.0, latency_ms=2.0, cost=0.001,
    )


async def test_usage_is_counted_exactly_once_across_workers_and_duplicates(nats_url: str, workers: list) -> None:
    await _ready(nats_url)
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    events = [usage(f"req{i}") for i in range(60)]
    for event in events:
        await js.publish(subjects.USAGE_RECORDED, encode(event))
    for event in events[:20]:  # a producer retrying after the dedup window: a second copy
        await js.publish(subjects.USAGE_RECORDED, encode(event))
    kv = await js.key_value(KV_BUDGETS)

    async def settled() -> Totals | None:
        try:
            totals = msgspec.json.decode((await kv.get("totals.tenant.acme")).value or b"{}", type=Totals)
        except NotFoundError:
            return None
        info = await js.consumer_info("USAGE", "finops")
        return totals if (info.num_pending, info.num_ack_pending) == (0, 0) and totals.requests >= 60 else None

    totals = await eventually(settled, timeout_s=30)
    assert totals.requests == 60, "expired deadlines do not stop accounting; duplicates are not counted"
    assert totals.prompt_tokens == 600 and totals.completion_tokens == 300
    await nc.close()


async def test_audit_chain_is_unbroken_with_two_workers(nats_url: str, workers: list) -> None:
    await _ready(nats_url)
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    sent = [
        AuditEvent(request_id=f"r{i}", correlation_id="c", deadline=deadline_in(5), tenant="acme",
                   business_unit="bu", user_role="role", usecase_class="chat", stage="router", outcome="routed")
        for i in range(150)
    ]
    await asyncio.gather(*(js.publish(subjects.audit("router"), encode(e)) for e in sent))
    # Redelivered copies of the same events must not be chained twice.
    for event in sent[:10]:
        await js.publish(subjects.audit("router"), encode(event))

    async def chained() -> list[AuditRecord] | None:
        records = [decode(data, AuditRecord) for data in await stored(js, subjects.audit_chain("acme"))]
        return records if len(records) >= 150 else None

    records = await eventually(chained, timeout_s=30)
    assert verify_chain(records) is None
    assert sorted(r.event.event_id for r in records) == sorted(e.event_id for e in sent)
    await nc.close()


async def test_malformed_usage_is_dead_lettered(nats_url: str, workers: list) -> None:
    await _ready(nats_url)
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await js.publish(subjects.USAGE_RECORDED, b"not json at all")

    async def letter() -> DeadLetter | None:
        try:
            msg = await js.get_last_msg(DLQ.name, subjects.dlq("finops"))
        except NotFoundError:
            return None
        return decode(msg.data or b"", DeadLetter)

    dead = await eventually(letter)
    assert dead.reason == "malformed" and dead.payload == b"not json at all"
    assert dead.subject == subjects.USAGE_RECORDED
    await nc.close()


async def test_topology_is_idempotent(nats_url: str) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)
    await ensure_topology(js)
    info = await js.stream_info("AUDIT")
    assert info.config.deny_delete and info.config.deny_purge
    await nc.close()
