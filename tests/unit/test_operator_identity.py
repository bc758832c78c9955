"""Operator identity (issue 14): every command that changes the mesh — keys, budgets, policies —
records who did it the same way (``--actor``, ``$STELLWERK_ACTOR``, the OS user) and refuses an
actor that is no identifier (exit 2) before it changes anything. Against a real nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas import subjects
from schemas.events import AuditEvent, decode
from services.finops.cli import app as finops_app
from services.kernel.cli_conventions import INVALID_INPUT
from services.runtime.bus import connect, ensure_topology
from stellwerk.cli import app as stellwerk_app
from tests.integration.mesh import stored

ROUTING_POLICY = Path(__file__).resolve().parents[2] / "services" / "router" / "policies"


def budget_audits(nats_url: str) -> list[AuditEvent]:
    async def read() -> list[AuditEvent]:
        nc = await connect(nats_url, "test", persistent=False)
        try:
            await ensure_topology(nc.jetstream())  # a refused change may have created nothing at all
            return [decode(data, AuditEvent) for data in await stored(nc.jetstream(), subjects.audit("finops"))]
        finally:
            await nc.close()

    return asyncio.run(read())


def set_budget(nats_url: str, budget_id: str, *extra: str) -> int:
    result = CliRunner().invoke(finops_app, ["budget", "set", budget_id, "--scope", "tenant", "--scope-id",
                                             "acme-insurance", "--limit", "100", "--nats-url", nats_url, *extra])
    return result.exit_code


def test_budget_changes_record_their_operator(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_ACTOR", "alice@ops")
    assert set_budget(nats_url, "from-env") == 0
    assert set_budget(nats_url, "from-option", "--actor", "carol") == 0
    monkeypatch.delenv("STELLWERK_ACTOR")
    assert set_budget(nats_url, "from-os-user") == 0
    actors = {e.attributes["budget_id"]: e.attributes["actor"] for e in budget_audits(nats_url)}
    assert actors["from-env"] == "alice@ops" and actors["from-option"] == "carol"
    assert actors["from-os-user"]  # the OS user, as an identifier


def test_an_actor_that_is_no_identifier_changes_nothing(nats_url: str) -> None:
    assert set_budget(nats_url, "refused", "--actor", "two words") == INVALID_INPUT
    assert budget_audits(nats_url) == []
    pushed = CliRunner().invoke(stellwerk_app, ["policy", "push", str(ROUTING_POLICY), "-m", "test", "--actor",
                                                "x" * 129, "--nats-url", nats_url])
    assert pushed.exit_code == INVALID_INPUT, pushed.output


def test_a_policy_change_is_never_in_force_unaudited(nats_url: str) -> None:
    """Review 1h: the audit event is published before the change is written, under an id derived
    from the change and the revision it replaces — a failed audit leaves nothing in force, and
    a retried change is audited once."""
    from nats.js.errors import NoStreamResponseError

    from schemas.streams import AUDIT, KV_POLICIES
    from services.runtime import policy_bundles
    from stellwerk.policy_push import audit_change, check_bundle, store_bundle

    name, source = check_bundle(ROUTING_POLICY)

    async def run() -> None:
        nc = await connect(nats_url, "test", persistent=False)
        try:
            js = nc.jetstream()
            await ensure_topology(js)
            kv = await js.key_value(KV_POLICIES)
            await js.delete_stream(AUDIT.name)  # the audit trail cannot take the event
            with pytest.raises(NoStreamResponseError):
                await store_bundle(nats_url, name, source, "alice", "audit down")
            assert await policy_bundles.current(kv, name) is None
            assert await policy_bundles.history(kv, name) == []

            await ensure_topology(js)  # the audit trail is back: the change lands, audited
            change = await store_bundle(nats_url, name, source, "alice", "audit up")
            assert (await policy_bundles.current(kv, name)).version == source.version  # type: ignore[union-attr]
            await audit_change(nc, change, 0)  # a retry of the same change: the same message id
            pushed = [decode(d, AuditEvent) for d in await stored(js, subjects.audit("policy"))]
            assert [(e.outcome, e.policy_version, e.attributes["actor"]) for e in pushed] == [
                ("policy_pushed", source.version, "alice")]
        finally:
            await nc.close()

    asyncio.run(run())
