"""Per-service NATS users against a real nats-server running the generated configuration.

A service's credentials can do its own job (publish its subjects, pull and ack its own
durables, use its KV buckets, answer its requests) and nothing else: the gateway, the tool
gateway and an agent cannot write into the audit trail, no service can pull or ack another
service's consumer or read another service's inbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas import subjects
from schemas.streams import (
    AUDIT,
    AUDIT_INTAKE,
    CONSUMERS,
    DLP_INPUT,
    FINOPS_USAGE,
    INFERENCE,
    ROUTER,
    STREAMS,
)
from services.runtime.bus import ensure_topology
from services.runtime.settings import MeshSettings
from stellwerk import nats_auth
from tests.ops.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "compose" / "nats" / "auth.conf"


# --- the generated configuration ------------------------------------------------------------


def test_committed_config_is_generated_from_the_service_contracts() -> None:
    assert COMMITTED.read_text() == nats_auth.render_auth(), (
        "compose/nats/auth.conf is stale: run `uv run python -m stellwerk.nats_auth config compose/nats/auth.conf`"
    )
    assert "password: $NATS_PASSWORD_" in COMMITTED.read_text()


def test_only_the_audit_service_writes_chain_records_and_each_service_only_its_own_stages() -> None:
    for p in nats_auth.principals():
        audit_subjects = {s for s in p.permissions.publish if s.startswith(subjects.AUDIT_PREFIX + ".")}
        if p.user == "audit":
            assert audit_subjects == {f"{subjects.AUDIT_CHAIN_PREFIX}.*", subjects.AUDIT_CHECKPOINT_ALL}
        else:
            # audit.<stage> always; audit.trail.<stage> for the stages that end requests.
            own = {subjects.audit(stage) for stage in p.stages}
            assert own <= audit_subjects <= own | {subjects.audit_trail(stage) for stage in p.stages}, p.user
    trails = {p.user for p in nats_auth.principals()
              if any(s.startswith(subjects.AUDIT_TRAIL_PREFIX + ".") for s in p.permissions.publish)}
    assert trails == {"dlp", "router", "inference"}  # the request path's workers, nobody else


def test_durables_are_pulled_and_acked_only_by_their_own_service() -> None:
    for consumer in CONSUMERS:
        pulls = f"$JS.API.CONSUMER.MSG.NEXT.{consumer.stream}.{consumer.durable}"
        owners = {p.user for p in nats_auth.principals() if pulls in p.permissions.publish}
        assert owners == {consumer.service}, consumer.durable
        denied = {p.user for p in nats_auth.principals() if pulls in p.deny_publish}
        assert denied == {p.user for p in nats_auth.principals()} - {consumer.service}
    for p in nats_auth.principals():
        everything = p.permissions.publish | p.permissions.subscribe
        assert not {">", "*", "$JS.API.>", "$JS.ACK.>", "_INBOX.>", "stellwerk.>"} & everything, p.user
        assert not any(s.startswith(("$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE")) for s in everything)
        # Nobody listens on the pipeline subjects themselves: prompts are read only by pulling.
        assert not any(s.startswith("stellwerk.v1.re") for s in p.permissions.subscribe if "result" not in s)
        inboxes = {s for s in p.permissions.subscribe if s.startswith("_INBOX")}
        assert inboxes == {f"{nats_auth.inbox_prefix(p.user)}.>"}, p.user


def test_runtime_settings_use_the_users_own_inbox_prefix() -> None:
    settings = MeshSettings(nats_user="dlp", nats_password="x")  # type: ignore[arg-type]
    options = settings.nats_connect_options()
    assert options["user"] == "dlp"
    assert options["inbox_prefix"] == nats_auth.inbox_prefix("dlp")


# --- a real server with the generated users ---------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("nats-auth"), size=1)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def connect(server: Cluster) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    opened: list[Client] = []

    async def open_as(user: str) -> Client:
        nc = await server.connect(user)
        opened.append(nc)
        return nc

    yield open_as
    for nc in opened:
        await nc.close()


def violations(nc: Client) -> list[str]:
    return [str(e) for e in nc.test_errors if "permissions violation" in str(e).lower()]  # type: ignore[attr-defined]


async def _violation_after(nc: Client, before: int) -> bool:
    """The server sends -ERR before the PONG of the flush; nats-py hands it to the error
    callback in a task of its own, so give that task a chance to run (bounded wait)."""
    await nc.flush()
    for _ in range(100):
        if len(violations(nc)) > before:
            return True
        await asyncio.sleep(0.02)
    return False


async def refused(nc: Client, subject: str, payload: bytes = b"{}", reply: str = "") -> bool:
    """Publish on core NATS; True if the server answered with a permissions violation."""
    before = len(violations(nc))
    await nc.publish(subject, payload, reply=reply)
    return await _violation_after(nc, before)


async def subscribe_refused(nc: Client, subject: str) -> bool:
    before = len(violations(nc))
    sub = await nc.subscribe(subject)
    refused = await _violation_after(nc, before)
    await sub.unsubscribe()
    return refused


async def stored(nc: Client, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.messages


async def pull_one(nc: Client, consumer: object) -> Msg:
    from schemas.streams import ConsumerDef

    assert isinstance(consumer, ConsumerDef)
    sub = await nc.jetstream().pull_subscribe_bind(durable=consumer.durable, stream=consumer.stream)
    msgs = await sub.fetch(1, timeout=30)
    await msgs[0].ack_sync()
    await sub.unsubscribe()
    return msgs[0]


async def test_each_service_can_do_its_own_job(connect: Callable[[str], Awaitable[Client]]) -> None:
    dlp = await connect("dlp")
    await ensure_topology(dlp.jetstream())  # every worker declares the mesh at start
    for definition in STREAMS:
        assert (await dlp.jetstream().stream_info(definition.name)).config.name == definition.name
    gateway, router, inference = await connect("gateway"), await connect("router"), await connect("inference")
    finops, audit = await connect("finops"), await connect("audit")

    # The request path, stage by stage: publish into PIPELINE, the next service pulls and acks.
    await gateway.jetstream().publish(subjects.REQUEST_SUBMITTED, b"{}", headers={"Nats-Msg-Id": "t1:submitted"})
    await gateway.jetstream().publish(subjects.audit("gateway"), b"{}")
    await pull_one(dlp, DLP_INPUT)
    await dlp.jetstream().publish(subjects.REQUEST_SCREENED, b"{}")
    await dlp.jetstream().publish(subjects.audit("dlp_input"), b"{}")
    await dlp.jetstream().publish(subjects.audit_trail("dlp_input"), b"{}")  # a request's whole trail
    await pull_one(router, ROUTER)
    await router.jetstream().publish(subjects.REQUEST_ROUTED, b"{}")
    await pull_one(inference, INFERENCE)
    await inference.jetstream().publish(subjects.USAGE_RECORDED, b"{}")
    await pull_one(finops, FINOPS_USAGE)
    await finops.jetstream().publish(subjects.FINOPS_ALERT, b"{}")
    await pull_one(audit, AUDIT_INTAKE)
    await audit.jetstream().publish(subjects.audit_chain("acme"), b"{}")
    await audit.jetstream().publish(subjects.audit_checkpoint("acme"), b"{}")
    await audit.jetstream().get_last_msg(AUDIT.name, subjects.audit_chain("acme"))

    # Results to the caller (core NATS) and dead letters.
    result = await gateway.subscribe(subjects.RESULT_ALL)
    await gateway.flush()
    await dlp.publish(subjects.result("r1"), b"{}")
    assert (await result.next_msg(timeout=30)).subject == subjects.result("r1")
    await inference.jetstream().publish(subjects.dlq("inference"), b"{}")

    # KV: inference writes capacity, the router watches it; finops and gateway their buckets.
    await (await inference.jetstream().key_value("capacity")).put("local-vllm-1", b"{}")
    watcher = await (await router.jetstream().key_value("capacity")).watch("local-vllm-1")
    assert (await watcher.updates(timeout=30)) is not None  # type: ignore[no-untyped-call]
    await watcher.stop()  # type: ignore[no-untyped-call]
    await (await finops.jetstream().key_value("budgets")).put("state.tenant.acme", b"{}")
    await (await gateway.jetstream().key_value("ratelimits")).put("user.k", b"1")

    # Request-reply: policy pushes to the router, tool calls to the tool gateway, discovery.
    operator, toolgateway, agent = await connect("operator"), await connect("toolgateway"), await connect("agent")

    async def answer(msg: Msg) -> None:
        await msg.respond(b"ok")

    await router.subscribe(subjects.CONTROL_POLICY_PUSH, cb=answer)
    await toolgateway.subscribe(subjects.TOOL_CALL_REQUESTED, queue="toolgateway", cb=answer)
    await dlp.subscribe("$SRV.PING", cb=answer)
    await dlp.subscribe(subjects.DLP_SCREEN, queue="dlp", cb=answer)  # tool calls' DLP
    for nc in (router, toolgateway, dlp):
        await nc.flush()
    assert (await toolgateway.request(subjects.DLP_SCREEN, b"{}", timeout=30)).data == b"ok"
    assert (await operator.request(subjects.CONTROL_POLICY_PUSH, b"{}", timeout=30)).data == b"ok"
    assert (await agent.request(subjects.TOOL_CALL_REQUESTED, b"{}", timeout=30)).data == b"ok"
    assert (await operator.request("$SRV.PING", b"", timeout=30)).data == b"ok"
    # A call parked for approval is answered later, by any tool gateway worker.
    parked = await agent.subscribe(f"{nats_auth.inbox_prefix('agent')}.parked")
    await agent.flush()
    await toolgateway.publish(f"{nats_auth.inbox_prefix('agent')}.parked", b"approved")
    assert (await parked.next_msg(timeout=30)).data == b"approved"
    await toolgateway.jetstream().publish(subjects.TOOL_APPROVAL_REQUESTED, b"{}")
    await toolgateway.jetstream().publish(subjects.audit("toolgateway"), b"{}")

    for nc in (dlp, gateway, router, inference, finops, audit, operator, toolgateway, agent):
        assert violations(nc) == [], violations(nc)


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("gateway", subjects.audit("dlp_input")),  # forging another stage's decision
        ("gateway", subjects.audit_chain("acme-insurance")),  # forging chained records
        ("gateway", subjects.audit_checkpoint("acme-insurance")),
        ("gateway", subjects.REQUEST_SCREENED),  # skipping the DLP stage
        ("gateway", subjects.USAGE_RECORDED),
        ("toolgateway", subjects.audit("dlp_output")),
        ("toolgateway", subjects.audit_chain("acme-insurance")),
        ("agent", subjects.audit("toolgateway")),
        ("agent", subjects.audit_chain("acme-insurance")),
        ("agent", subjects.REQUEST_SUBMITTED),
        ("client", subjects.audit("client")),
        ("router", subjects.audit("inference")),
        ("inference", subjects.FINOPS_ALERT),
        ("dlp", subjects.REQUEST_ROUTED),  # skipping the router
        ("finops", subjects.audit_chain("acme-insurance")),
        ("toolgateway", subjects.audit_trail("dlp_input")),  # forging a request's trail
        ("router", subjects.audit_trail("dlp_output")),
    ],
)
async def test_a_service_cannot_publish_what_it_does_not_own(
    connect: Callable[[str], Awaitable[Client]], user: str, subject: str
) -> None:
    observer = await connect("operator")
    stream = next(s.name for s in STREAMS if any(_matches(f, subject) for f in s.subjects))
    before = await stored(observer, stream)
    nc = await connect(user)
    assert await refused(nc, subject, json.dumps({"forged": True}).encode()), f"{user} may publish {subject}"
    assert await stored(observer, stream) == before


async def test_a_service_cannot_consume_or_ack_another_services_consumer(
    connect: Callable[[str], Awaitable[Client]],
) -> None:
    gateway, router, dlp = await connect("gateway"), await connect("router"), await connect("dlp")
    await gateway.jetstream().publish(subjects.REQUEST_SUBMITTED, b'{"prompt": 1}')
    info = await dlp.jetstream().consumer_info(DLP_INPUT.stream, DLP_INPUT.durable)
    pending = info.num_pending
    inbox = f"{nats_auth.inbox_prefix('gateway')}.steal"
    assert await refused(gateway, f"$JS.API.CONSUMER.MSG.NEXT.{DLP_INPUT.stream}.{DLP_INPUT.durable}",
                         b'{"batch": 1}', reply=inbox)
    assert await refused(router, f"$JS.API.CONSUMER.MSG.NEXT.{DLP_INPUT.stream}.{DLP_INPUT.durable}",
                         b'{"batch": 1}', reply=f"{nats_auth.inbox_prefix('router')}.steal")
    assert await refused(router, f"$JS.ACK.{DLP_INPUT.stream}.{DLP_INPUT.durable}.1.1.1.0.0")
    # Operators may scan USAGE and AUDIT through consumers of their own, never the durables.
    operator = await connect("operator")
    for consumer in (FINOPS_USAGE, AUDIT_INTAKE):
        assert await refused(operator, f"$JS.API.CONSUMER.MSG.NEXT.{consumer.stream}.{consumer.durable}",
                             b'{"batch": 1}', reply=f"{nats_auth.inbox_prefix('operator')}.steal")
    usage = await operator.jetstream().pull_subscribe(subjects.USAGE_RECORDED, stream=FINOPS_USAGE.stream)
    assert await usage.fetch(1, timeout=30)
    await usage.unsubscribe()
    assert await refused(gateway, f"$JS.API.CONSUMER.DELETE.{DLP_INPUT.stream}.{DLP_INPUT.durable}")
    assert await refused(gateway, f"$JS.API.CONSUMER.CREATE.{AUDIT.name}.spy")
    assert await refused(gateway, f"$JS.API.STREAM.PURGE.{AUDIT.name}")
    assert await refused(gateway, f"$JS.API.STREAM.DELETE.{AUDIT.name}")
    info = await dlp.jetstream().consumer_info(DLP_INPUT.stream, DLP_INPUT.durable)
    assert info.num_pending == pending  # still waiting for DLP, untouched
    # Nobody reads another service's deliveries, nor the prompts on the pipeline subjects.
    assert await subscribe_refused(gateway, f"{nats_auth.inbox_prefix('dlp')}.>")
    assert await subscribe_refused(gateway, "_INBOX.>")
    assert await subscribe_refused(router, subjects.REQUEST_SUBMITTED)
    assert await subscribe_refused(await connect("agent"), subjects.AUDIT_ALL)
    assert await subscribe_refused(await connect("client"), subjects.AUDIT_ALL)
    # Only DLP workers receive the texts sent for screening (tool arguments and results).
    for user in ("toolgateway", "gateway", "agent", "router"):
        assert await subscribe_refused(await connect(user), subjects.DLP_SCREEN), user


async def test_a_wrong_password_is_refused(server: Cluster) -> None:
    import nats

    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(server.nodes[0].url, user="gateway", password="wrong", connect_timeout=2,
                           max_reconnect_attempts=0, allow_reconnect=False)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)
