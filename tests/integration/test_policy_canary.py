"""A routing-policy canary end to end (issue 17): a policy version staged with ``stellwerk
rollout stage-policy`` (stored, not in force) decides half of the requests; it refuses what
the policy in force routes, so it is rolled back by the router, audited with actor ``system``,
and afterwards every request is decided by the policy in force again."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
import pytest_asyncio
import yaml
from nats.aio.client import Client
from typer.testing import CliRunner

from schemas.kv import RolloutState
from schemas.streams import KV_ROLLOUTS
from services.router.policy_store import SHIPPED_POLICY_DIR
from services.runtime.rego import read_policy_dir
from stellwerk.cli import app
from stellwerk.supervisor import Mesh
from tests.conftest import start_nats
from tests.integration.mesh import audit_events, write_test_config

API_KEY = "sk-stellwerk-demo"
DEFAULT_RULE = '} else := {"id": "default.local_first", "route": preferred.name}'


def refusing_policy(root: Path) -> Path:
    directory = root / "candidate"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    rego = directory / "routing.rego"
    rego.write_text(rego.read_text().replace(DEFAULT_RULE, DEFAULT_RULE.replace("preferred.name", "refuse")))
    # The shipped case table expects the old default rule; stage-policy refuses a candidate that
    # fails its table, so this deliberately bad candidate ships without one.
    (directory / "routing_test.json").write_text("[]")
    return directory


@pytest.fixture(scope="module")
def policy_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, str]]:
    root = tmp_path_factory.mktemp("policy-canary")
    nats_process, url = start_nats(root / "nats")
    candidate = refusing_policy(root)
    staged = CliRunner().invoke(app, ["rollout", "stage-policy", str(candidate), "-m", "refuses by default",
                                      "--actor", "alice", "--nats-url", url])
    assert staged.exit_code == 0, staged.output
    version = read_policy_dir(candidate).version
    assert version in staged.output and "not in force" in staged.output
    config = write_test_config(root)
    raw: dict[str, Any] = yaml.safe_load(config.read_text())
    raw["policy_canary"] = {"version": version, "weight": 50,
                            "rollback": {"window_s": 300, "min_requests": 6, "max_error_rate": 0.3}}
    config.write_text(yaml.safe_dump(raw))
    mesh = Mesh(config_file=config, state_dir=root / "state", nats_url=url, extra_env={"STELLWERK_ACK_WAIT_S": "2"})
    try:
        asyncio.run(mesh.start())
        yield mesh, version
    finally:
        mesh.stop()
        nats_process.terminate()
        nats_process.wait(timeout=5)


@pytest_asyncio.fixture(loop_scope="session")
async def pnc(policy_mesh: tuple[Mesh, str]) -> AsyncIterator[Client]:
    connection = await nats.connect(policy_mesh[0].url)
    yield connection
    await connection.drain()


async def ask(mesh: Mesh, text: str) -> str | None:
    """The answer, or None when the request was refused (the canary's no_route_available)."""
    async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30) as http:
        response = await http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                                   json={"model": "stellwerk", "messages": [{"role": "user", "content": text}]})
    if response.status_code != 200:
        assert response.json()["error"]["code"] == "no_route_available", response.text
        return None
    return str(response.json()["choices"][0]["message"]["content"])


async def test_a_refusing_policy_canary_is_rolled_back_and_audited(policy_mesh: tuple[Mesh, str], pnc: Client) -> None:
    mesh, version = policy_mesh
    kv = await pnc.jetstream().key_value(KV_ROLLOUTS)
    key = f"policy.{version.removeprefix('sha256:')}"
    refused = 0
    state: RolloutState | None = None
    for batch in range(10):
        answers = await asyncio.gather(*(ask(mesh, f"Frage {batch}.{i}") for i in range(6)))
        refused += sum(1 for a in answers if a is None)
        try:
            entry = await kv.get(key)
        except Exception:  # noqa: BLE001 - not rolled back yet
            continue
        assert entry.value is not None
        state = msgspec.json.decode(entry.value, type=RolloutState)
        break
    assert state is not None, "the policy canary was never rolled back"
    assert refused >= 1  # the canary really decided requests before it was rolled back
    assert state.actor == "system" and state.route == "policy" and state.error_rate > 0.3
    events = await audit_events(pnc.jetstream())
    canaried = [e for e in events if e.stage == "router" and e.attributes.get("policy_variant") == "canary"]
    assert canaried and all(e.policy_version == version for e in canaried)
    assert any(e.attributes.get("policy_canary_error") == "true" for e in canaried)
    staged = [e for e in events if e.outcome == "policy_staged"]
    assert [(e.stage, e.attributes["actor"], e.policy_version) for e in staged] == [("policy", "alice", version)]
    rollback = [e for e in events if e.outcome == "variant_rolled_back"]
    assert len(rollback) == 1 and rollback[0].stage == "router"
    assert rollback[0].attributes["actor"] == "system"
    assert rollback[0].attributes["variant"] == version.removeprefix("sha256:")
    # The policy in force decides everything now.
    after = await asyncio.gather(*(ask(mesh, f"Danach {i}") for i in range(12)))
    assert all(a == f"Danach {i}" for i, a in enumerate(after))
