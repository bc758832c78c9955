"""Policy bundles for the DLP worker (issue 17), against a real nats-server and a real DLP
worker process: a worker started after a push decides by the pushed sensitivity policy; a
rollback reaches it within 2 s; a guardrail bundle is followed too; a sensitivity bundle
failing its case table is refused; a version never pushed but shipped still resolves.
"""

from __future__ import annotations

import asyncio
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
from schemas.events import ScreenReply, ScreenRequest, deadline_in, decode, encode
from services.dlp.settings import PACKAGE_DIR
from services.runtime.bus import connect, ensure_topology
from services.runtime.rego import read_policy_dir
from stellwerk.discovery import ping_workers
from tests.bundle_helpers import acli, started_processes
from tests.integration.mesh import audit_events, eventually

ENVELOPE = {"correlation_id": "c1", "tenant": "acme", "business_unit": "claims", "user_role": "analyst",
            "usecase_class": "chat"}


def renamed(root: Path, name: str, source: Path, module: str, old: str, new: str) -> Path:
    """A copy of a shipped policy whose rule id ``old`` is ``new`` (rule and case table alike)."""
    directory = root / name
    shutil.copytree(source, directory)
    for path in directory.iterdir():
        if path.suffix in (".rego", ".json"):
            path.write_text(path.read_text().replace(old, new))
    assert (directory / module).read_text().count(new)
    return directory


@pytest.fixture
def dlp_worker(nats_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    yield from started_processes()


async def screened_rule(nc: Client) -> tuple[str, str]:
    """Rule id and policy version of one screening of a text without personal data."""
    request = ScreenRequest(**ENVELOPE, request_id="screen-1", deadline=deadline_in(10), direction="input",
                            texts=["Bitte fasse den Vorgang kurz zusammen."])
    reply = decode((await nc.request(subjects.DLP_SCREEN, encode(request), timeout=10)).data, ScreenReply)
    assert reply.decision is not None, reply.error
    return reply.decision.rule_id, reply.decision.policy_version


async def test_late_dlp_worker_follows_pushes_and_rollbacks(
    nats_url: str, tmp_path: Path, dlp_worker: list[subprocess.Popen[bytes]],
) -> None:
    shipped = PACKAGE_DIR / "policies"
    first = renamed(tmp_path, "v1", shipped, "sensitivity.rego", "dlp.allow.no_pii", "dlp.allow.clean_v1")
    second = renamed(tmp_path, "v2", shipped, "sensitivity.rego", "dlp.allow.no_pii", "dlp.allow.clean_v2")
    v1, v2 = read_policy_dir(first).version, read_policy_dir(second).version
    nc = await connect(nats_url, "test", persistent=False)
    await ensure_topology(nc.jetstream())

    result = await acli("policy", "push", str(first), "-m", "rename the clean rule", "--actor", "alice",
                        "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    assert f"sensitivity policy {v1}" in result.output

    # A DLP worker started after the push decides by the pushed version, not its image's.
    log = tmp_path / "dlp.log"
    env = {**os.environ, "STELLWERK_NATS_URL": nats_url, "STELLWERK_WORKER_ID": "dlp-1"}
    dlp_worker.append(subprocess.Popen([sys.executable, "-m", "services.dlp"], env=env,
                                       stdout=log.open("wb"), stderr=subprocess.STDOUT))

    async def ready() -> bool:
        return len((await ping_workers(nc, 0.2)).get("dlp", [])) >= 1
    await eventually(ready, timeout_s=90)
    assert await screened_rule(nc) == ("dlp.allow.clean_v1", v1)

    # A second push and a rollback reach the running worker without a restart.
    result = await acli("policy", "push", str(second), "-m", "second", "--actor", "bob", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output

    async def decides_v2() -> bool:
        return await screened_rule(nc) == ("dlp.allow.clean_v2", v2)
    await eventually(decides_v2, timeout_s=5)
    result = await acli("policy", "rollback", v1, "--policy", "sensitivity", "-m", "v2 was wrong",
                        "--actor", "carol", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    rolled_back = time.monotonic()
    while (decision := await screened_rule(nc)) != ("dlp.allow.clean_v1", v1):
        assert time.monotonic() - rolled_back < 2.0, decision
        await asyncio.sleep(0.05)

    # The guardrail policy is a bundle of its own, followed by the same worker.
    guard = renamed(tmp_path, "guard", PACKAGE_DIR / "guard_policies", "guardrails.rego", "guard.allow",
                    "guard.allow_v1")
    result = await acli("policy", "push", str(guard), "-m", "guard", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    assert "guard policy" in result.output
    guard_version = read_policy_dir(guard).version

    async def guard_installed() -> bool:
        return any(guard_version in line and "policy_bundle_installed" in line
                   for line in log.read_text().splitlines())
    await eventually(guard_installed, timeout_s=5)

    # A sensitivity bundle failing its own case table is refused; v1 stays in force.
    broken = renamed(tmp_path, "broken", shipped, "sensitivity.rego", "dlp.allow.no_pii", "dlp.allow.broken")
    cases = json.loads((broken / "sensitivity_test.json").read_text())
    cases[0]["expect"] = {"action": "block"}
    (broken / "sensitivity_test.json").write_text(json.dumps(cases))
    result = await acli("policy", "push", str(broken), "-m", "broken", "--nats-url", nats_url)
    assert result.exit_code == 2 and "policy rejected" in result.output
    assert await screened_rule(nc) == ("dlp.allow.clean_v1", v1)

    # History per kind; show resolves pushed and shipped versions alike.
    result = await acli("policy", "history", "--policy", "sensitivity", "--format", "json", "--nats-url", nats_url)
    document = json.loads(result.stdout)
    assert document["in_force"] == {"sensitivity": v1}
    assert [(c["action"], c["version"], c["actor"]) for c in document["changes"]] == [
        ("push", v1, "alice"), ("push", v2, "bob"), ("rollback", v1, "carol")]
    # Every change is also an audit event of the operator's stage "policy": kind, version, actor.
    changes = [(e.outcome, e.policy_version, e.attributes["actor"]) for e in await audit_events(nc.jetstream())
               if e.stage == "policy" and e.attributes.get("policy") == "sensitivity"]
    assert changes == [("policy_pushed", v1, "alice"), ("policy_pushed", v2, "bob"),
                       ("policy_rolled_back", v1, "carol")]
    result = await acli("policy", "show", v2, "--module", "sensitivity.rego", "--nats-url", nats_url)
    assert result.exit_code == 0 and result.stdout == (second / "sensitivity.rego").read_text()
    result = await acli("policy", "show", read_policy_dir(shipped).version, "--module", "sensitivity.rego",
                        "--nats-url", nats_url)
    assert result.exit_code == 0 and result.stdout == (shipped / "sensitivity.rego").read_text()
    await nc.close()
