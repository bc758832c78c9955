"""Policy bundles in the mesh (issue 17), against a real nats-server and a real router process.

A router started after a push decides by the pushed version (its decision carries it); a
rollback reaches a running router within 2 s; a bundle failing its case table is refused and
nothing is stored; history and show resolve every version to actor, message and text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from schemas import subjects
from schemas.events import (
    AuditEvent,
    ChatMessage,
    DlpDecision,
    RequestRouted,
    RequestScreened,
    deadline_in,
    decode,
    encode,
)
from schemas.streams import INFERENCE
from services.router.policy_store import SHIPPED_POLICY_DIR
from services.runtime.bus import connect, ensure_topology
from services.runtime.rego import read_policy_dir
from stellwerk.discovery import ping_workers
from tests.bundle_helpers import acli, started_processes
from tests.integration.mesh import eventually

ENVELOPE = {"correlation_id": "c1", "tenant": "acme", "business_unit": "claims", "user_role": "analyst",
            "usecase_class": "chat"}


def allow_decision() -> DlpDecision:
    return DlpDecision(direction="input", action="allow", rule_id="dlp.allow.no_pii", policy_version="v",
                       language="de", derived_sensitivity="internal", has_pii=False, has_medical_terms=False)


def policy_copy(root: Path, name: str, marker: int) -> Path:
    """The shipped routing policy with a harmless data key: same decisions, another version."""
    directory = root / name
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    data = json.loads((directory / "data.json").read_text())
    data["bundle_test_marker"] = marker
    (directory / "data.json").write_text(json.dumps(data, indent=2))
    return directory


@pytest.fixture
def router(nats_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start router processes on demand (``start(router)``); all are stopped at the end."""
    yield from started_processes()


def start(started: list[subprocess.Popen[bytes]], nats_url: str, logs: Path) -> None:
    env = {**os.environ, "STELLWERK_NATS_URL": nats_url, "STELLWERK_WORKER_ID": f"router-{len(started) + 1}"}
    started.append(subprocess.Popen([sys.executable, "-m", "services.router"], env=env,
                                    stdout=(logs / f"router-{len(started) + 1}.log").open("wb"),
                                    stderr=subprocess.STDOUT))


async def routed_version(nc: Client, n: int) -> str:
    """Send one screened request through the router; the policy version its decision carries."""
    js = nc.jetstream()
    screened = RequestScreened(**ENVELOPE, request_id=f"req-{n}", deadline=deadline_in(30),
                               messages=[ChatMessage(role="user", content="Hallo")],
                               trail=[AuditEvent(**ENVELOPE, request_id=f"req-{n}", deadline=deadline_in(30),
                                                 stage="gateway", outcome="received")],
                               dlp_input=allow_decision())
    await js.publish(subjects.REQUEST_SCREENED, encode(screened))
    sub = await js.pull_subscribe_bind(INFERENCE.durable, INFERENCE.stream)
    try:
        for _ in range(20):
            try:
                msgs = await sub.fetch(1, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                routed = decode(msg.data, RequestRouted)
                if routed.request_id == f"req-{n}":
                    return routed.routing.policy_version
    finally:
        await sub.unsubscribe()
    raise AssertionError("the router did not route")


async def test_late_router_rollback_refusal_history_show(
    nats_url: str, tmp_path: Path, router: list[subprocess.Popen[bytes]],
) -> None:
    shipped = read_policy_dir(SHIPPED_POLICY_DIR).version
    first, second = policy_copy(tmp_path, "v1", 1), policy_copy(tmp_path, "v2", 2)
    v1, v2 = read_policy_dir(first).version, read_policy_dir(second).version
    assert len({shipped, v1, v2}) == 3
    nc = await connect(nats_url, "test", persistent=False)
    await ensure_topology(nc.jetstream())

    # Pushed while no router runs: stored, in force, nobody to acknowledge.
    result = await acli("policy", "push", str(first), "--message", "raise the marker", "--actor", "alice",
                        "--nats-url", nats_url, "--wait", "0.2")
    assert result.exit_code == 0, result.output
    assert v1 in result.output and "routers load it when they start" in result.output

    # A router started afterwards decides by the pushed version, not the one in its image.
    start(router, nats_url, tmp_path)

    async def ready() -> bool:
        return len((await ping_workers(nc, 0.2)).get("router", [])) >= 1
    await eventually(ready, timeout_s=60)
    assert await routed_version(nc, 1) == v1

    # A second push reaches the running router (acknowledged), a rollback follows within 2 s.
    result = await acli("policy", "push", str(second), "-m", "second", "--actor", "bob", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    assert "installed by 1 of 1" in result.output
    assert await routed_version(nc, 2) == v2
    result = await acli("policy", "rollback", v1, "-m", "second was wrong", "--actor", "carol",
                        "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    rolled_back = time.monotonic()
    n = 3
    while (version := await routed_version(nc, n)) != v1:
        assert time.monotonic() - rolled_back < 2.0, version
        n += 1
    assert time.monotonic() - rolled_back < 2.0

    # A bundle failing its own case table is refused; nothing stored, v1 stays in force.
    broken = policy_copy(tmp_path, "broken", 3)
    cases = json.loads((broken / "routing_test.json").read_text())
    cases[0]["expect"] = {"route": "no-such-route"}
    (broken / "routing_test.json").write_text(json.dumps(cases))
    result = await acli("policy", "push", str(broken), "-m", "broken", "--nats-url", nats_url)
    assert result.exit_code == 2 and "policy rejected" in result.output

    # History: who did what, why; the version in force marked. Show: the text of any version.
    result = await acli("policy", "history", "--policy", "routing", "--format", "json", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["in_force"] == {"routing": v1}
    assert [(c["action"], c["version"], c["actor"], c["message"]) for c in document["changes"]] == [
        ("push", v1, "alice", "raise the marker"), ("push", v2, "bob", "second"),
        ("rollback", v1, "carol", "second was wrong")]
    result = await acli("policy", "show", v2, "--module", "data.json", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bundle_test_marker"] == 2
    result = await acli("policy", "show", v1.removeprefix("sha256:")[:8], "--module", "routing.rego",
                        "--nats-url", nats_url)
    assert result.exit_code == 0 and result.stdout == (first / "routing.rego").read_text()
    assert (await acli("policy", "show", "sha256:0000000000000000", "--nats-url", nats_url)).exit_code == 1
    assert (await acli("policy", "rollback", "sha256:0000000000000000", "--nats-url", nats_url)).exit_code == 1
    await nc.close()
