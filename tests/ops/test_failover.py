"""Failover of a three-node NATS cluster under steady load through the whole mesh.

Requests flow from an application on the bus (user ``client``) through dlp, router,
inference, dlp and audit, each service with its own credentials. After a third of the
requests one server is SIGKILLed — the one leading the PIPELINE stream — and after two thirds
it is restarted from its store. Every request must get exactly one answer, be accounted once
in USAGE and audited once per stage in an intact hash chain (``stellwerk audit verify``).

The caller publishes with ``Nats-Msg-Id`` and retries while the stream elects a new leader:
that is the documented client contract (at-least-once publish, deduplicated by the stream).
The phases are counted in requests, never in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

from schemas import subjects
from schemas.events import (
    AuditRecord,
    ChatMessage,
    RequestResult,
    RequestSubmitted,
    UsageRecorded,
    deadline_in,
    decode,
    encode,
    new_id,
)
from schemas.streams import AUDIT, AUDIT_INTAKE, CONSUMERS, DLQ, FINOPS_USAGE, KV_BUCKETS, STREAMS, USAGE
from services.audit.reader import scan
from services.audit.stored import StoredMsg
from services.audit.trail import verify_stream
from tests.ops.cluster import Cluster, Node
from tests.ops.conftest import OpsMesh

TOTAL = 240
KILL_AFTER = 80
RESTART_AFTER = 160
CONCURRENCY = 8
REQUEST_TIMEOUT_S = 90.0  # a safety bound for a stuck request, not a latency assertion


@dataclass
class Tally:
    sent: list[str] = field(default_factory=list)
    answered: dict[str, RequestResult] = field(default_factory=dict)
    on_the_wire: Counter[str] = field(default_factory=Counter)
    publish_retries: int = 0
    lost: list[str] = field(default_factory=list)
    killed: str = ""
    killed_led: list[str] = field(default_factory=list)


async def _leader(nc: Client, stream: str) -> str | None:
    try:
        info = await nc.jetstream().stream_info(stream)
    except (nats.errors.Error, APIError, TimeoutError):
        return None
    return info.cluster.leader if info.cluster else None


async def _publish(client: Client, event: RequestSubmitted, tally: Tally) -> None:
    """Publish until the stream acknowledges; the message id makes retries harmless."""
    js = client.jetstream()
    while True:
        try:
            await js.publish(subjects.REQUEST_SUBMITTED, encode(event),
                             headers={"Nats-Msg-Id": f"{event.request_id}:submitted"}, timeout=2.0)
            return
        except (nats.errors.NoRespondersError, NoStreamResponseError, nats.errors.TimeoutError, TimeoutError, APIError):
            # During a leader election the stream briefly has no responder: retry, same msg id.
            tally.publish_retries += 1
            if event.remaining_s() <= 0:
                raise
            await asyncio.sleep(0.1)


async def _one(client: Client, index: int, tally: Tally) -> None:
    request_id = new_id()
    event = RequestSubmitted(
        request_id=request_id, correlation_id=request_id, deadline=deadline_in(REQUEST_TIMEOUT_S),
        tenant="acme-insurance", business_unit="claims", user_role="analyst", usecase_class="chat",
        messages=[ChatMessage(role="user", content=f"Bitte fasse Vorgang {index} kurz zusammen.")],
    )
    tally.sent.append(request_id)
    sub = await client.subscribe(subjects.result(request_id), max_msgs=1)
    try:
        await _publish(client, event, tally)
        msg = await sub.next_msg(timeout=max(event.remaining_s(), 0.1))
        tally.answered[request_id] = decode(msg.data, RequestResult)
    except (nats.errors.TimeoutError, TimeoutError):
        tally.lost.append(request_id)
    finally:
        await sub.unsubscribe()


async def _caught_up(operator: Client, node: Node) -> bool:
    """Every replicated stream and bucket has the restarted node back as a current replica."""
    js = operator.jetstream()
    for name in [s.name for s in STREAMS] + [f"KV_{b}" for b in KV_BUCKETS]:
        info = await js.stream_info(name)
        assert info.cluster is not None
        members = {info.cluster.leader: True} | {r.name: bool(r.current) for r in info.cluster.replicas or []}
        if not members.get(node.name, False):
            return False
    return True


async def _drained(operator: Client) -> bool:
    js = operator.jetstream()
    for consumer in (AUDIT_INTAKE, FINOPS_USAGE):
        info = await js.consumer_info(consumer.stream, consumer.durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def _eventually(probe: object, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await probe():  # type: ignore[operator]
                return
        except (nats.errors.Error, APIError, TimeoutError):
            pass
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.25)


async def _stored(js: object, stream: str, subject: str) -> list[StoredMsg]:
    found: list[StoredMsg] = []

    def keep(msg: StoredMsg) -> bool:
        found.append(msg)
        return True

    await scan(js, stream, subject, keep)  # type: ignore[arg-type]
    return found


async def test_one_server_killed_and_restarted_under_load_loses_and_duplicates_nothing(ops_mesh: OpsMesh) -> None:
    cluster: Cluster = ops_mesh.cluster
    operator = await cluster.connect("operator")
    js = operator.jetstream()
    for name in [s.name for s in STREAMS] + [f"KV_{b}" for b in KV_BUCKETS]:
        assert (await js.stream_info(name)).config.num_replicas == 3, name
    dlq_before = (await js.stream_info(DLQ.name)).state.messages

    # The application talks to a server that survives: its own connection is not under test.
    leader = await _leader(operator, "PIPELINE")
    home = next(n for n in cluster.nodes if n.name != leader)
    client = await cluster.connect("client", servers=[home.url], dont_randomize=True)
    observer = await cluster.connect("client", servers=[home.url], dont_randomize=True)
    tally = Tally()

    async def count(msg: Msg) -> None:
        tally.on_the_wire[msg.subject.rsplit(".", 1)[-1]] += 1

    await observer.subscribe(subjects.RESULT_ALL, cb=count)
    await observer.flush()

    kill, restart = asyncio.Event(), asyncio.Event()
    victim: list[Node] = []

    async def chaos() -> None:
        await kill.wait()
        current = await _leader(operator, "PIPELINE")
        node = next((n for n in cluster.nodes if n.name == current and n is not home), None)
        node = node or next(n for n in cluster.nodes if n is not home)
        for name in [s.name for s in STREAMS]:
            if await _leader(operator, name) == node.name:
                tally.killed_led.append(name)
        node.kill()
        tally.killed = node.name
        victim.append(node)
        await restart.wait()
        await asyncio.to_thread(node.start, cluster.env)

    slots = asyncio.Semaphore(CONCURRENCY)

    async def paced(index: int) -> None:
        async with slots:
            if index == KILL_AFTER:
                kill.set()
            if index == RESTART_AFTER:
                restart.set()
            await _one(client, index, tally)

    chaos_task = asyncio.create_task(chaos())
    await asyncio.gather(*(paced(i) for i in range(TOTAL)))
    await chaos_task
    assert victim, "no server was killed"

    await _eventually(lambda: _caught_up(operator, victim[0]))
    await _eventually(lambda: _drained(operator))
    await observer.flush()

    # Every request answered once, and answered well.
    not_ok = {rid: (r.status, r.error.code if r.error else None) for rid, r in tally.answered.items() if r.status != "ok"}
    wire_duplicates = {rid: n for rid, n in tally.on_the_wire.items() if n > 1}
    usage = Counter(decode(m.data, UsageRecorded).request_id for m in await _stored(js, USAGE.name, subjects.USAGE_RECORDED))
    records = [decode(m.data, AuditRecord) for m in await _stored(js, AUDIT.name, subjects.AUDIT_CHAIN_ALL)]
    stages: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for record in records:
        # The guard decides twice per request, once per direction: one record each.
        stage = record.event.stage
        if stage == "guard":
            stage = f"guard.{record.event.attributes.get('direction', '?')}"
        stages[record.event.request_id][(stage, record.event.outcome)] += 1
    expected = set(stages[tally.sent[0]])
    report = await verify_stream(js, AUDIT.name)
    dlq_after = (await js.stream_info(DLQ.name)).state.messages

    print(
        f"\nfailover: killed {tally.killed} (leader of {', '.join(tally.killed_led) or 'no stream'}); "
        f"requests sent {len(tally.sent)}, answered {len(tally.answered)}, lost {len(tally.lost)}, "
        f"not ok {len(not_ok)}, duplicated answers at the caller 0, result messages seen twice on the bus "
        f"{len(wire_duplicates)}, publish retries {tally.publish_retries}; usage records {sum(usage[r] for r in tally.sent)}; "
        f"audit records {len(records)} in {len(report.partitions)} chain(s), intact {report.ok}; "
        f"dead letters {dlq_after - dlq_before}"
    )
    assert len(tally.sent) == TOTAL
    assert tally.lost == []
    assert not_ok == {}
    assert set(tally.answered) == set(tally.sent)
    assert {rid: usage[rid] for rid in tally.sent if usage[rid] != 1} == {}, "usage not recorded exactly once"
    assert {stage for stage, _ in expected} >= {"dlp_input", "router", "inference", "dlp_output"}, expected
    for rid in tally.sent:
        assert set(stages[rid]) == expected, (rid, stages[rid])
        assert max(stages[rid].values()) == 1, (rid, stages[rid])
    assert report.ok, [p for p in report.partitions if p.first_break]
    assert dlq_after == dlq_before
    for consumer in CONSUMERS:
        info = await js.consumer_info(consumer.stream, consumer.durable)
        assert info.config.durable_name == consumer.durable
    await client.close()
    await observer.close()
    await operator.close()
