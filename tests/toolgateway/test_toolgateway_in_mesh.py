"""The tool gateway in a real mesh: nats-server, the gateway worker as its own process, the
search MCP server over streamable HTTP (started by the supervisor) in front of a local
stand-in for SearXNG, and the tickets MCP server over stdio (the worker's child).

Covers issue 7's "Done when": allowed call, allowlist refusal with rule id, schema violation
with path, rate limit with retry hint, approval (approve, deny, timeout, across a worker
restart), denied search domains, and no parameter value in the audit. Issue 14: decisions need
an approver's credential (the default), four eyes need two distinct approvers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from nats.aio.client import Client
from typer.testing import CliRunner

from schemas import subjects
from schemas.events import (
    ApprovalDecided,
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    AuditEvent,
    AuditTrail,
    ToolCallResult,
    decode,
)
from services.runtime.bus import connect
from services.toolgateway.approval_store import ApprovalStore
from services.toolgateway.approvals import ApprovalRecord
from services.toolgateway.cli import app as tools_app
from services.toolgateway.cli import approvals_app
from services.toolgateway.settings import SHIPPED_POLICY_DIR
from stellwerk.discovery import ping_workers
from stellwerk.supervisor import Mesh, free_port
from stellwerk.tools_client import ToolsClient, decide_approval
from tests.integration.mesh import audit_events, eventually, running_mesh, stored, write_test_config
from tests.toolgateway.searxng_stub import searxng_stub

# Argument values that must never reach the audit (each test uses some of them).
SENTINELS = ("Zebrafink", "Quokka-Tarif", "Okapi Drucker", "Narwal Netz", "Axolotl", "Pangolin", "Erdferkel")


@pytest.fixture(scope="module")
def searxng() -> Iterator[tuple[str, list[str]]]:
    with searxng_stub() as stub:
        yield stub


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, searxng: tuple[str, list[str]], metrics_port: int
) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("tool-mesh")
    port = free_port()
    # Status changes need four eyes here (issue 14): two distinct approvers.
    policy_dir = root / "tool-policy"
    shutil.copytree(SHIPPED_POLICY_DIR, policy_dir)
    data = json.loads((policy_dir / "data.json").read_text())
    data["toolgateway"]["four_eyes_tools"] = ["tickets.update_ticket_status"]
    (policy_dir / "data.json").write_text(json.dumps(data))
    search_config = root / "search.yaml"
    search_config.write_text(yaml.safe_dump({
        "deny_domains": ["pastebin.com"],
        "usecases": {"default": {}, "chat": {"deny_domains": ["blocked.example"]}},
    }))
    config = write_test_config(
        root,
        tool_servers=[
            {"name": "search", "transport": "http", "url": f"http://127.0.0.1:{port}/mcp",
             "launch": ["-m", "services.mcp_servers.search", "--transport", "http", "--port", str(port)],
             "health_url": f"http://127.0.0.1:{port}/health", "timeout_s": 10},
            {"name": "tickets", "transport": "stdio", "command": ["{python}", "-m", "services.mcp_servers.tickets"],
             "timeout_s": 10},
        ],
        tool_rate_limits={"users": {"rate-test-user": {"requests": 3, "per_s": 3600}}},
        tool_approvals={"sweep_interval_s": 0.2},
    )
    with running_mesh(
        root, config, scale={"toolgateway": 1, "dlp": 1},  # tool arguments and results: DLP on the bus
        start_simulators=False,
        extra_env={
            "STELLWERK_SEARCH_SEARXNG_URL": searxng[0],
            "STELLWERK_SEARCH_CONFIG_FILE": str(search_config),
            "STELLWERK_SEARCH_RETENTION_DB": str(root / "search.db"),
            "STELLWERK_TICKETS_DB": str(root / "tickets.db"),
            "STELLWERK_TOOLGATEWAY_METRICS_PORT": str(metrics_port),
            "STELLWERK_TOOLGATEWAY_POLICY_DIR": str(policy_dir),
        },
    ) as running:
        yield running


def agent(nc: Client, role: str, *, user: str | None = None, tenant: str = "acme-insurance",
          agent_id: str = "test-agent") -> ToolsClient:
    return ToolsClient(nc, tenant=tenant, business_unit="claims", user_role=role, agent_id=agent_id, user_id=user)


async def pending_approval(nc: Client, agent_id: str) -> ApprovalRecord:
    store = ApprovalStore(await nc.jetstream().key_value("approvals"))

    async def probe() -> ApprovalRecord | None:
        found = [r for r in await store.records() if r.state == "pending" and r.request.agent_id == agent_id]
        return found[0] if found else None

    return await eventually(probe)


# Approvers' keys (issue 14), created once per module in the mesh's ``keys`` bucket.
_CREDENTIALS: dict[str, str] = {}


async def credential(nc: Client, key_id: str, *, role: str = "approver", tenant: str = "acme-insurance") -> str:
    if key_id not in _CREDENTIALS:
        from services.runtime.keys import KeyStore

        keys = await KeyStore.open(nc.jetstream())
        _CREDENTIALS[key_id], _ = await keys.create(tenant=tenant, business_unit="claims", role=role, actor="test",
                                                    key_id=key_id)
    return _CREDENTIALS[key_id]


async def decide_as(nc: Client, key_id: str | None, approval_id: str, approve: bool = True,
                    reason: str | None = None) -> ApprovalDecisionReply:
    """Decide with ``key_id``'s credential (None: a typed name only). A key created a moment ago
    may not have reached the tool gateway's watch yet: retried while unknown."""
    secret = await credential(nc, key_id) if key_id else None

    async def attempt() -> ApprovalDecisionReply | None:
        reply = await decide_approval(nc, ApprovalDecisionRequested(
            approval_id=approval_id, approve=approve, approver=key_id or "typed-name", reason=reason,
            credential=secret))
        return None if reply.reason == "invalid_credential" and secret else reply

    return await eventually(attempt, timeout_s=10)


def hosts(result: ToolCallResult) -> list[str]:
    assert result.structured is not None
    return [hit["url"] for hit in result.structured["results"]]


# --- the decision path -------------------------------------------------------------------


async def test_allowed_call_succeeds_and_denied_domains_return_nothing(nc: Client) -> None:
    result = await agent(nc, "analyst").call(
        "search.web_search", {"query": "site:blocked.example Zebrafink", "max_results": 10}
    )
    assert result.status == "ok", result.error
    assert (result.rule_id, result.error) == ("role.allowed", None)
    assert result.policy_version and result.policy_version.startswith("sha256:")
    urls = hosts(result)
    assert urls, "the allowed domains' hits come back"
    assert not any("blocked.example" in u or "pastebin.com" in u for u in urls)
    assert result.structured is not None and result.structured["filtered_out"] == 3


async def test_tool_outside_the_allowlist_is_refused_with_its_rule(nc: Client) -> None:
    result = await agent(nc, "analyst").call("tickets.create_ticket", {"title": "Okapi Drucker"})
    assert (result.status, result.error and result.error.code) == ("refused", "tool_not_allowed")
    assert result.error is not None and result.error.rule_id == "role.tool_not_allowed"
    clinic = await agent(nc, "support-agent", tenant="st-marien-klinikum").call(
        "search.web_search", {"query": "Axolotl"}
    )
    assert clinic.error is not None and clinic.error.rule_id == "tenant.tool_denied"


async def test_unknown_tool(nc: Client) -> None:
    result = await agent(nc, "support-agent").call("search.no_such_tool", {})
    assert result.error is not None and (result.error.code, result.error.rule_id) == ("tool_unknown",
                                                                                       "catalog.unknown_tool")


async def test_schema_violation_is_refused_with_the_path(nc: Client) -> None:
    bad_type = await agent(nc, "analyst").call("tickets.get_ticket", {"ticket_id": "Pangolin"})
    assert bad_type.error is not None
    assert (bad_type.status, bad_type.error.code, bad_type.error.rule_id) == ("refused", "tool_schema_violation",
                                                                              "schema.violation")
    assert (bad_type.error.instance_path, bad_type.error.schema_path, bad_type.error.keyword) == (
        "/ticket_id", "/properties/ticket_id/type", "type")
    assert "Pangolin" not in bad_type.error.message
    extra = await agent(nc, "analyst").call("tickets.get_ticket", {"ticket_id": 1, "note": "Erdferkel"})
    assert extra.error is not None and extra.error.keyword == "additionalProperties"


async def test_rate_limit_trips_with_a_retry_hint(nc: Client) -> None:
    limited = agent(nc, "analyst", user="rate-test-user")
    for _ in range(3):
        assert (await limited.call("tickets.get_ticket", {"ticket_id": 1})).status == "ok"
    refused = await limited.call("tickets.get_ticket", {"ticket_id": 1})
    assert refused.error is not None
    assert (refused.error.code, refused.error.rule_id) == ("rate_limited", "ratelimit.tool.user")
    # 3 per hour: the next call fits a third of an hour after the first.
    assert refused.error.retry_after_s is not None and 600 < refused.error.retry_after_s <= 1200
    other = await agent(nc, "analyst", user="someone-else").call("tickets.get_ticket", {"ticket_id": 1})
    assert other.status == "ok"


async def test_pii_in_a_search_query_is_redacted_before_it_leaves(
    nc: Client, searxng: tuple[str, list[str]]
) -> None:
    result = await agent(nc, "analyst").call(
        "search.web_search", {"query": "Versicherung erika.mustermann@example.org Quokka-Tarif"}
    )
    assert result.status == "ok"
    assert result.dlp_input is not None and result.dlp_input.action == "redact"
    sent = [q for q in searxng[1] if "Quokka" in q]
    assert sent and all("erika.mustermann@example.org" not in q and "<EMAIL_ADDRESS>" in q for q in sent)


async def test_injected_instructions_in_a_result_are_withheld(nc: Client) -> None:
    result = await agent(nc, "analyst").call("search.web_search", {"query": "agents Narwal Netz"})
    assert result.error is not None and result.error.code == "tool_result_injection"
    assert "instruction_override" in result.injection_signals
    assert result.content == [] and result.structured is None


# --- human approval ----------------------------------------------------------------------


async def test_critical_tool_waits_and_runs_when_approved(nc: Client) -> None:
    support = agent(nc, "support-agent", user="erika", agent_id="approve-bot")
    call = asyncio.create_task(support.call("tickets.create_ticket", {"title": "Okapi Drucker kaputt"}, timeout_s=60))
    record = await pending_approval(nc, "approve-bot")
    assert not call.done()
    assert (record.rule_id, record.request.arguments) == ("role.allowed.critical_approval", {})
    self_approval = await decide_as(nc, "erika", record.approval_id)  # the human the agent acts for
    assert (self_approval.accepted, self_approval.reason) == (False, "self_approval")
    unproven = await decide_as(nc, None, record.approval_id)  # a typed name proves nothing (the default)
    assert (unproven.accepted, unproven.reason) == (False, "identity_required")
    reply = await decide_as(nc, "team-lead", record.approval_id)
    assert (reply.accepted, reply.state, reply.approver) == (True, "approved", "team-lead")
    result = await call
    assert result.status == "ok", result.error
    assert result.approval_id == record.approval_id
    assert result.structured is not None and result.structured["title"] == "Okapi Drucker kaputt"
    again = await decide_as(nc, "team-lead", record.approval_id, approve=False, reason="late")
    assert (again.accepted, again.reason) == (False, "already_decided")
    read = await support.call("tickets.get_ticket", {"ticket_id": result.structured["id"]})
    assert read.status == "ok" and read.approval_id is None  # reads need no approval


async def test_critical_tool_denied(nc: Client) -> None:
    support = agent(nc, "support-agent", user="erika", agent_id="deny-bot")
    call = asyncio.create_task(support.call("tickets.update_ticket_status",
                                            {"ticket_id": 2, "status": "closed", "comment": "Narwal Netz"}))
    record = await pending_approval(nc, "deny-bot")
    reply = await decide_as(nc, "team-lead", record.approval_id, approve=False, reason="wrong_ticket")
    assert reply.accepted and reply.state == "denied"  # four eyes to approve; one denial ends it
    result = await call
    assert result.error is not None
    assert (result.status, result.error.code, result.error.rule_id, result.error.reason) == (
        "refused", "approval_denied", "approval.denied", "wrong_ticket")
    store = ApprovalStore(await nc.jetstream().key_value("approvals"))
    assert await store.arguments(record.approval_id) is None  # arguments leave KV with the call


async def test_approval_times_out_before_the_callers_deadline(nc: Client) -> None:
    support = agent(nc, "support-agent", user="erika", agent_id="timeout-bot")
    result = await support.call("tickets.create_ticket", {"title": "Axolotl wartet"}, timeout_s=4)
    assert result.error is not None
    assert (result.error.code, result.error.rule_id) == ("approval_expired", "approval.expired")


async def test_metrics_expose_calls_denials_and_approvals(nc: Client, metrics_port: int) -> None:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert 'stellwerk_tool_calls_total{code="none",server="search",status="ok",tool="web_search"}' in text
    assert 'stellwerk_tool_denials_total{rule_id="role.tool_not_allowed"}' in text
    assert 'stellwerk_tool_denials_total{rule_id="ratelimit.tool.user"}' in text
    assert 'stellwerk_tool_approval_wait_seconds_count{outcome="approved"}' in text
    assert "stellwerk_tool_approvals_pending" in text
    assert 'stellwerk_tool_server_up{server="tickets"} 1.0' in text
    assert "stellwerk_tool_requests_total" in text


async def test_pending_approval_survives_a_gateway_restart(mesh: Mesh, nc: Client) -> None:
    support = agent(nc, "support-agent", user="erika", agent_id="restart-bot")
    call = asyncio.create_task(support.call("tickets.create_ticket", {"title": "Zebrafink Restart"}, timeout_s=90))
    record = await pending_approval(nc, "restart-bot")
    (old,) = [p for p in mesh.parts if p.name == "toolgateway-1"]
    assert old.process is not None
    old.process.kill()
    old.process.wait(timeout=10)
    new = mesh.add_worker("toolgateway")

    async def restarted() -> bool:
        return new.name in (await ping_workers(nc, wait_s=0.2)).get("toolgateway", [])

    await eventually(restarted, timeout_s=60)
    reply = await decide_as(nc, "team-lead", record.approval_id)
    assert reply.accepted
    result = await call  # the same request, answered by the new worker
    assert result.status == "ok", result.error
    assert result.approval_id == record.approval_id


async def test_four_eyes_need_two_distinct_approvers_and_every_decision_carries_its_actor(nc: Client) -> None:
    """Issue 14: a four-eyes tool (status changes, in this mesh's policy) stays pending after the
    first approval; the same approver again is refused; a second approver runs it. Every decision,
    taken or refused, is audited with its actor."""
    support = agent(nc, "support-agent", user="erika", agent_id="four-eyes-bot")
    call = asyncio.create_task(support.call("tickets.update_ticket_status",
                                            {"ticket_id": 1, "status": "closed", "comment": "Quokka-Tarif"},
                                            timeout_s=60))
    record = await pending_approval(nc, "four-eyes-bot")
    assert record.approvals_required == 2
    first = await decide_as(nc, "team-lead", record.approval_id)
    assert (first.accepted, first.state, first.approvals_missing, first.approver) == (True, "pending", 1, "team-lead")
    assert not call.done()
    again = await decide_as(nc, "team-lead", record.approval_id)
    assert (again.accepted, again.reason) == (False, "same_approver")
    await credential(nc, "clinic-approver", tenant="st-marien-klinikum")  # an approver of another tenant
    foreign = await decide_as(nc, "clinic-approver", record.approval_id)
    assert (foreign.accepted, foreign.reason) == (False, "wrong_tenant")
    second = await decide_as(nc, "deputy", record.approval_id)
    assert (second.accepted, second.state, second.approver) == (True, "approved", "deputy")
    result = await call
    assert result.status == "ok", result.error

    js = nc.jetstream()
    decided = [decode(d, ApprovalDecided) for d in await stored(js, subjects.TOOL_APPROVAL_DECIDED)]
    (final,) = [e for e in decided if e.approval_id == record.approval_id]
    assert (final.approver, final.approvers) == ("deputy", ["team-lead", "deputy"])

    async def audited() -> list[AuditEvent] | None:
        mine = [e for e in await audit_events(js)
                if e.stage == "approval" and e.tool is not None and e.tool.approval_id == record.approval_id]
        return mine if len(mine) >= 4 else None

    events = {(e.outcome, e.attributes.get("reason")): e for e in await eventually(audited)}
    assert events[("first_approval", None)].tool.approver == "team-lead"  # type: ignore[union-attr]
    assert events[("decision_refused", "same_approver")].attributes["actor"] == "team-lead"
    assert events[("decision_refused", "wrong_tenant")].attributes["actor"] == "clinic-approver"
    approved = events[("approved", None)]
    assert approved.tool is not None and approved.tool.approver == "deputy"
    assert approved.attributes["approvers"] == "team-lead+deputy"


async def _credential_in_new_loop(mesh: Mesh, key_id: str) -> str:
    if key_id in _CREDENTIALS:
        return _CREDENTIALS[key_id]
    client = await connect(mesh.url, "test", persistent=False)
    try:
        return await credential(client, key_id)
    finally:
        await client.close()


# --- the command line --------------------------------------------------------------------


def test_cli_lists_calls_and_approves(mesh: Mesh) -> None:
    runner = CliRunner()
    listed = runner.invoke(tools_app, ["list", "--role", "analyst", "--json", "--nats-url", mesh.url])
    assert listed.exit_code == 0, listed.output
    catalog = json.loads(listed.output)
    allowed = {f"{t['server']}.{t['name']}": t["allowed"] for t in catalog["tools"]}
    assert allowed["search.web_search"] is True and allowed["tickets.create_ticket"] is False

    called = runner.invoke(tools_app, ["call", "tickets.get_ticket", "--role", "analyst", "--args",
                                       '{"ticket_id": 1}', "--json", "--nats-url", mesh.url])
    assert called.exit_code == 0, called.output
    assert json.loads(called.output)["status"] == "ok"
    refused = runner.invoke(tools_app, ["call", "tickets.create_ticket", "--role", "analyst", "--args",
                                        '{"title": "x"}', "--nats-url", mesh.url])
    assert refused.exit_code == 1
    assert runner.invoke(tools_app, ["call", "nodot", "--role", "analyst", "--nats-url", mesh.url]).exit_code == 2

    # A critical call from another process waits; the approver sees it and approves it.
    waiting = subprocess.Popen(
        [sys.executable, "-c", "from services.toolgateway.cli import app; app()", "call", "tickets.create_ticket",
         "--role", "support-agent", "--agent", "cli-bot", "--args", '{"title": "Erdferkel im Serverraum"}',
         "--json", "--nats-url", mesh.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        pending: list[dict[str, Any]] = []
        for _ in range(200):
            shown = runner.invoke(approvals_app, ["list", "--json", "--nats-url", mesh.url])
            assert shown.exit_code == 0, shown.output
            pending = [p for p in json.loads(shown.output) if p["record"]["request"]["agent_id"] == "cli-bot"]
            if pending:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert pending, "the call never showed up as pending"
        approval_id = pending[0]["record"]["approval_id"]
        assert pending[0]["arguments"] == {"title": "Erdferkel im Serverraum"}  # the approver sees what runs
        prose = runner.invoke(approvals_app, ["deny", approval_id, "--reason", "because I said so",
                                              "--nats-url", mesh.url])
        assert prose.exit_code == 2  # reasons are codes: they are audited
        unproven = runner.invoke(approvals_app, ["approve", approval_id, "--approver", "team-lead",
                                                 "--nats-url", mesh.url], env={"STELLWERK_APPROVER_CREDENTIAL": ""})
        assert unproven.exit_code == 1 and "identity_required" in unproven.output
        secret = asyncio.run(_credential_in_new_loop(mesh, "team-lead"))
        for _ in range(50):  # a key created a moment ago reaches the tool gateway's watch within ms
            approved = runner.invoke(approvals_app, ["approve", approval_id, "--nats-url", mesh.url],
                                     env={"STELLWERK_APPROVER_CREDENTIAL": secret})
            if "invalid_credential" not in approved.output:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert approved.exit_code == 0, approved.output
        assert "approved by team-lead" in approved.output
        out, errors = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, errors
    assert json.loads(out)["status"] == "ok"


# --- the audit (last: it reads what every test above left behind) ------------------------


async def test_no_parameter_value_appears_in_the_audit(nc: Client) -> None:
    js = nc.jetstream()
    raw: list[bytes] = []
    events: list[AuditEvent] = []
    for stream in ("AUDIT", "APPROVALS"):
        info = await js.stream_info(stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            raw.append(msg.data or b"")
            if stream == "AUDIT" and msg.subject.startswith(subjects.AUDIT_TRAIL_PREFIX):
                events.extend(decode(msg.data or b"", AuditTrail).events)
            elif stream == "AUDIT":
                events.append(decode(msg.data or b"", AuditEvent))
    blob = b"\n".join(raw).decode()
    for value in (*SENTINELS, "erika.mustermann@example.org", "Okapi Drucker kaputt", "Serverraum"):
        assert value not in blob
    tool_events = [e for e in events if e.tool is not None]
    stages = {(e.stage, e.outcome) for e in tool_events}
    assert {("toolgateway", "completed"), ("toolgateway", "refused"), ("toolgateway", "pending_approval"),
            ("approval", "approved"), ("approval", "denied"), ("approval", "expired")} <= stages
    search = next(e for e in tool_events if e.tool and e.tool.tool == "web_search" and e.outcome == "completed")
    assert search.tool is not None
    assert msgspec.to_builtins(search.tool.parameter_shape)[0] == {"path": "/query", "type": "string"}
    assert search.rule_id == "role.allowed" and search.policy_version
    approved = next(e for e in tool_events if e.stage == "approval" and e.outcome == "approved")
    assert approved.tool is not None and approved.tool.approver and approved.tool.approval_wait_ms is not None
    violation = next(e for e in tool_events if e.reason_code == "tool_schema_violation")
    assert violation.tool is not None and violation.tool.schema_path == "/properties/ticket_id/type"


async def test_a_credential_decides_only_as_an_approver_of_the_tenant_other_than_the_requester(nc: Client) -> None:
    """Issue 14: four eyes with identities. The decision records the identity the credential
    proves (its key id), not the name the client typed."""
    from schemas.events import ApprovalDecided
    from services.runtime.keys import KeyStore
    from tests.integration.mesh import stored

    keys = await KeyStore.open(nc.jetstream())
    approver_key, approver = await keys.create(tenant="acme-insurance", business_unit="claims", role="approver",
                                               actor="test")
    analyst_key, _ = await keys.create(tenant="acme-insurance", business_unit="claims", role="analyst", actor="test")
    foreign_key, _ = await keys.create(tenant="st-marien-klinikum", business_unit="cardiology", role="approver",
                                       actor="test")
    bot_key, bot = await keys.create(tenant="acme-insurance", business_unit="claims", role="approver", actor="test")
    support = agent(nc, "support-agent", user="erika", agent_id=bot.key_id)
    call = asyncio.create_task(support.call("tickets.create_ticket", {"title": "Pangolin Zugang"}, timeout_s=60))
    record = await pending_approval(nc, bot.key_id)

    async def decided(credential: str) -> tuple[bool, str | None]:
        reply = await decide_approval(nc, ApprovalDecisionRequested(
            approval_id=record.approval_id, approve=True, approver="typed-name", credential=credential))
        return reply.accepted, reply.reason

    async def seen() -> bool:  # the tool gateway's watch of the keys bucket has the new keys
        return await decided(analyst_key) != (False, "invalid_credential")

    await eventually(seen, timeout_s=5)
    assert await decided(analyst_key) == (False, "not_an_approver")
    assert await decided(foreign_key) == (False, "wrong_tenant")
    assert await decided(bot_key) == (False, "self_approval")  # the agent cannot approve its own call
    assert await decided("sk-stellwerk-not-a-key") == (False, "invalid_credential")
    assert await decided(approver_key) == (True, None)
    result = await call
    assert result.status == "ok", result.error
    events = [decode(data, ApprovalDecided) for data in await stored(nc.jetstream(), subjects.TOOL_APPROVAL_DECIDED)]
    assert [e.approver for e in events if e.approval_id == record.approval_id] == [approver.key_id]


async def test_a_rotated_key_is_the_same_approver_and_the_same_requester(nc: Client) -> None:
    """Review 1a: rotation keeps the old key valid for its grace and gives the new one another id;
    four eyes counts the chain (lineage), so one person with both keys is one approver, and an
    agent whose key was rotated cannot approve its own call with the other key either."""
    from datetime import timedelta

    from services.runtime.keys import KeyStore

    keys = await KeyStore.open(nc.jetstream())
    lead_old, lead = await keys.create(tenant="acme-insurance", business_unit="claims", role="approver", actor="test")
    lead_new, lead_next, _ = await keys.rotate(lead.key_id, "test", timedelta(hours=1))
    _, bot = await keys.create(tenant="acme-insurance", business_unit="claims", role="approver", actor="test")
    bot_new, _, _ = await keys.rotate(bot.key_id, "test", timedelta(hours=1))
    support = agent(nc, "support-agent", user="erika", agent_id=bot.key_id)
    call = asyncio.create_task(support.call("tickets.update_ticket_status",
                                            {"ticket_id": 1, "status": "closed", "comment": "Wombat-Tarif"},
                                            timeout_s=60))
    record = await pending_approval(nc, bot.key_id)
    assert record.approvals_required == 2

    async def decided(credential: str) -> ApprovalDecisionReply | None:
        reply = await decide_approval(nc, ApprovalDecisionRequested(
            approval_id=record.approval_id, approve=True, approver="typed-name", credential=credential))
        return None if reply.reason == "invalid_credential" else reply  # the watch may lag

    self_approval = await eventually(lambda: decided(bot_new), timeout_s=10)
    assert (self_approval.accepted, self_approval.reason) == (False, "self_approval")
    first = await eventually(lambda: decided(lead_old), timeout_s=10)
    assert (first.accepted, first.state, first.approver) == (True, "pending", lead.key_id)
    again = await eventually(lambda: decided(lead_new), timeout_s=10)
    assert (again.accepted, again.reason, again.approver) == (False, "same_approver", lead.key_id)
    assert lead_next.key_id != lead.key_id  # two keys, one person
    assert not call.done()
    second = await decide_as(nc, "deputy", record.approval_id)
    assert (second.accepted, second.state) == (True, "approved")
    assert (await call).status == "ok"
