"""The tool policy as a bundle in the mesh (issue 17), against a real nats-server and a real
tool gateway process: a gateway started after a push decides by the pushed version; a rollback
reaches it within 2 s; a tool bundle failing its case table is refused."""

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

from services.runtime.bus import connect, ensure_topology
from services.runtime.rego import read_policy_dir
from services.toolgateway.client import ToolsClient
from services.toolgateway.settings import SHIPPED_POLICY_DIR
from stellwerk.discovery import ping_workers
from tests.bundle_helpers import acli, started_processes
from tests.integration.mesh import eventually, write_test_config


def renamed(root: Path, name: str, new: str) -> Path:
    """The shipped tool policy whose ``role.unknown`` rule is called ``new`` (rule and cases)."""
    directory = root / name
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    for path in directory.iterdir():
        if path.suffix in (".rego", ".json"):
            path.write_text(path.read_text().replace('"role.unknown"', f'"{new}"'))
    return directory


@pytest.fixture
def gateway(nats_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    yield from started_processes()


async def test_late_tool_gateway_follows_pushes_and_rollbacks(
    nats_url: str, tmp_path: Path, gateway: list[subprocess.Popen[bytes]],
) -> None:
    first, second = renamed(tmp_path, "v1", "role.unknown_v1"), renamed(tmp_path, "v2", "role.unknown_v2")
    v1, v2 = read_policy_dir(first).version, read_policy_dir(second).version
    nc = await connect(nats_url, "test", persistent=False)
    await ensure_topology(nc.jetstream())
    result = await acli("policy", "push", str(first), "-m", "v1", "--actor", "alice", "--nats-url", nats_url)
    assert result.exit_code == 0 and f"tools policy {v1}" in result.output, result.output

    config = write_test_config(tmp_path, tool_servers=[])
    env = {**os.environ, "STELLWERK_NATS_URL": nats_url, "STELLWERK_CONFIG_FILE": str(config),
           "STELLWERK_WORKER_ID": "toolgateway-1", "STELLWERK_TOOLGATEWAY_DISCOVERY_WAIT_S": "0"}
    gateway.append(subprocess.Popen([sys.executable, "-m", "services.toolgateway"], env=env,
                                    stdout=(tmp_path / "toolgateway.log").open("wb"), stderr=subprocess.STDOUT))

    async def ready() -> bool:
        return len((await ping_workers(nc, 0.2)).get("toolgateway", [])) >= 1
    await eventually(ready, timeout_s=60)
    stranger = ToolsClient(nc, tenant="acme-insurance", business_unit="claims", user_role="no-such-role",
                           agent_id="bundle-test")

    async def decision() -> tuple[str | None, str | None]:
        refused = await stranger.call("search.web_search", {"query": "x"}, timeout_s=5)
        return refused.rule_id, refused.policy_version

    # Started after the push: the pushed version decides, not the image's.
    assert await decision() == ("role.unknown_v1", v1)

    result = await acli("policy", "push", str(second), "-m", "v2", "--actor", "bob", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output

    async def decides_v2() -> bool:
        return await decision() == ("role.unknown_v2", v2)
    await eventually(decides_v2, timeout_s=5)

    result = await acli("policy", "rollback", v1, "--policy", "tools", "-m", "back", "--nats-url", nats_url)
    assert result.exit_code == 0, result.output
    rolled_back = time.monotonic()
    while (found := await decision()) != ("role.unknown_v1", v1):
        assert time.monotonic() - rolled_back < 2.0, found
        await asyncio.sleep(0.05)

    # A tool bundle failing its own case table is refused; v1 stays in force.
    broken = renamed(tmp_path, "broken", "role.unknown_broken")
    cases = json.loads((broken / "tools_test.json").read_text())
    cases[0]["expect"] = {"allow": not cases[0]["expect"].get("allow", False)}
    (broken / "tools_test.json").write_text(json.dumps(cases))
    result = await acli("policy", "push", str(broken), "-m", "broken", "--nats-url", nats_url)
    assert result.exit_code == 2 and "policy rejected" in result.output
    assert await decision() == ("role.unknown_v1", v1)
    await nc.close()
