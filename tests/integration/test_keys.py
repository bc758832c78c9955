"""Keys as data (issue 14): ``stellwerk keys`` against a running mesh with two gateway
replicas — a change is in force on both within 2 s, without a restart; every change is audited
with its actor."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from schemas.kv import KeyRecord
from services.kernel.cli_conventions import FAILED, INVALID_INPUT
from services.runtime.bus import connect, ensure_topology
from services.runtime.keys import KeyStore, hash_key
from services.runtime.settings import ApiKey
from stellwerk.supervisor import Mesh, free_port, port_in_use
from tests.integration.mesh import audit_events

CLI = [sys.executable, "-m", "stellwerk"]
IN_FORCE_S = 2.0


def keys_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "keys", *args, "--nats-url", mesh.url], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def gateways(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The mesh's gateway and a second replica on the same bus."""
    port = free_port()
    log = (tmp_path_factory.mktemp("gateway-2") / "gateway-2.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "services.gateway", "--port", str(port)], env=mesh.env(),
                               stdout=log, stderr=subprocess.STDOUT)
    second = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (port_in_use(port) and httpx.get(second + "/readyz").status_code == 200):
            assert process.poll() is None, "the second gateway exited"
            assert time.monotonic() < deadline, "the second gateway did not get ready"
            time.sleep(0.1)
        yield [mesh.gateway_url, second]
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def status(gateway: str, key: str) -> int:
    return httpx.get(gateway + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def within(seconds: float, condition: Callable[[], bool]) -> float:
    """How long ``condition`` took to hold (fails after ``seconds``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started


def created(mesh: Mesh, *extra: str) -> dict[str, str]:
    result = keys_cli(mesh, "create", "--tenant", "acme-insurance", "--business-unit", "claims", "--role", "analyst",
                      "--format", "json", "--actor", "alice", *extra)
    assert result.returncode == 0, result.stderr
    body: dict[str, str] = json.loads(result.stdout)
    assert body["key"].startswith("sk-stellwerk-") and body["key_sha256"] == hash_key(body["key"])
    return body


def test_a_created_key_works_on_every_replica_within_2s_and_a_revoked_one_is_refused(
    mesh: Mesh, gateways: list[str]
) -> None:
    body = created(mesh, "--usecase", "summarization", "--expires", "30d")
    key, key_id = body["key"], body["key_id"]
    assert body["created_by"] == "alice" and body["usecase_class"] == "summarization" and body["expires_at"]
    for gateway in gateways:
        within(IN_FORCE_S, lambda g=gateway: status(g, key) == 200)
    answer = httpx.post(gateways[1] + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": "stellwerk", "messages": [{"role": "user", "content": "Hallo"}]}, timeout=30)
    assert answer.status_code == 200, answer.text

    listed = keys_cli(mesh, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    views = {v["key_id"]: v for v in json.loads(listed.stdout)}
    assert views[key_id]["state"] == "valid"
    assert "demo-claims" in views and views["demo-claims"]["source"] == "config"  # the bootstrap set
    assert key not in listed.stdout  # only hashes are stored

    revoked = keys_cli(mesh, "revoke", key_id, "--actor", "bob", "--format", "json")
    assert revoked.returncode == 0, revoked.stderr
    for gateway in gateways:
        within(IN_FORCE_S, lambda g=gateway: status(g, key) == 401)
    refused = httpx.post(gateways[0] + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": "stellwerk", "messages": [{"role": "user", "content": "Hallo"}]})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    again = keys_cli(mesh, "revoke", key_id)
    assert again.returncode == FAILED and "already_revoked" in again.stderr

    async def audited() -> list[tuple[str, str]]:
        nc = await connect(mesh.url, "test-keys", persistent=False)
        try:
            events = await audit_events(nc.jetstream())
        finally:
            await nc.close()
        return [(e.outcome, e.attributes["actor"]) for e in events
                if e.stage == "identity" and e.attributes.get("key_id") == key_id]

    changes = asyncio.run(audited())
    assert ("key_created", "alice") in changes and ("key_revoked", "bob") in changes
    assert all(key not in str(change) for change in changes)


def test_a_rotated_key_keeps_working_until_the_grace_period_ends(mesh: Mesh, gateways: list[str]) -> None:
    old = created(mesh)
    for gateway in gateways:
        within(IN_FORCE_S, lambda g=gateway: status(g, old["key"]) == 200)
    rotated = keys_cli(mesh, "rotate", old["key_id"], "--grace", "3s", "--format", "json", "--actor", "carol")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["rotated_from"] == old["key_id"] and new["previous"]["rotated_to"] == new["key_id"]
    assert new["tenant"] == old["tenant"] and new["user_role"] == old["user_role"]
    ends = time.monotonic() + 3
    for gateway in gateways:
        within(IN_FORCE_S, lambda g=gateway: status(g, new["key"]) == 200)
        assert status(gateway, old["key"]) == 200  # still in its grace period
    time.sleep(max(0.0, ends - time.monotonic()))
    for gateway in gateways:
        within(0.5, lambda g=gateway: status(g, old["key"]) == 401)
        assert status(gateway, new["key"]) == 200


def test_an_expired_key_is_refused(mesh: Mesh, gateways: list[str]) -> None:
    body = created(mesh, "--expires", "3s")
    within(IN_FORCE_S, lambda: status(gateways[0], body["key"]) == 200)
    within(4.0, lambda: status(gateways[0], body["key"]) == 401)


def test_invalid_input_and_unknown_keys_have_their_exit_codes(mesh: Mesh) -> None:
    assert keys_cli(mesh, "revoke", "key-doesnotexist").returncode == FAILED
    assert keys_cli(mesh, "rotate", "key-doesnotexist").returncode == FAILED
    bad = keys_cli(mesh, "create", "--tenant", "t", "--business-unit", "b", "--role", "r", "--expires", "soon")
    assert bad.returncode == INVALID_INPUT and "--expires" in bad.stderr
    bad = keys_cli(mesh, "create", "--tenant", "t", "--business-unit", "b", "--role", "r", "--usecase", "poetry")
    assert bad.returncode == INVALID_INPUT


def test_the_bootstrap_import_is_idempotent_and_never_undoes_a_revocation(nats_url: str, tmp_path: Path) -> None:
    config_key = ApiKey(key_id="boot", key_sha256=hash_key("sk-boot"), tenant="t", business_unit="b", user_role="r")

    async def run() -> tuple[list[str], list[str], KeyRecord]:
        nc = await connect(nats_url, "test-keys", persistent=False)
        try:
            js = nc.jetstream()
            await ensure_topology(js)
            store = await KeyStore.open(js)
            first = await store.import_keys([config_key])
            await store.revoke("boot", "alice")
            second = await store.import_keys([config_key])
            record, _ = await store.get("boot")
            return first, second, record
        finally:
            await nc.close()

    first, second, record = asyncio.run(run())
    assert first == ["boot"] and second == []
    assert record.revoked and record.revoked_by == "alice" and record.source == "config"


def test_an_approver_keys_owner_is_stored_and_kept_through_rotation(nats_url: str) -> None:
    """Review 1a: ``--owner oidc:<sub>`` ties a key to the person's single sign-on (four eyes
    counts both as one approver); a rotation keeps it; an owner that is no identifier is refused."""
    from typer.testing import CliRunner

    from services.gateway.keys_cli import app as keys_app

    def run(*args: str) -> dict[str, object]:
        result = CliRunner().invoke(keys_app, [*args, "--format", "json", "--actor", "test", "--nats-url", nats_url])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    created = run("create", "--tenant", "acme", "--business-unit", "claims", "--role", "approver",
                  "--owner", "oidc:alice")
    assert created["owner"] == "oidc:alice"
    rotated = run("rotate", str(created["key_id"]), "--grace", "1h")
    assert rotated["owner"] == "oidc:alice" and rotated["lineage"] == created["key_id"]
    refused = CliRunner().invoke(keys_app, ["create", "--tenant", "acme", "--business-unit", "claims", "--role",
                                            "approver", "--owner", "two words", "--nats-url", nats_url])
    assert refused.exit_code == INVALID_INPUT
