"""Shared fixtures: a real nats-server with JetStream on a free loopback port, and a client
connection to whichever ``mesh`` fixture the requesting test module sees."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client

from services.runtime.bus import connect
from stellwerk.supervisor import Mesh, free_port, nats_server_binary, port_in_use

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_in_use(port):
        assert process.poll() is None, "nats-server exited"
        assert time.monotonic() < deadline, "nats-server did not listen"
        time.sleep(0.01)
    return process, f"nats://127.0.0.1:{port}"


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    process, url = start_nats(tmp_path / "nats")
    yield url
    process.terminate()
    process.wait(timeout=5)


@pytest_asyncio.fixture(loop_scope="session")
async def nc(mesh: Mesh) -> AsyncIterator[Client]:
    client = await connect(mesh.url, "test", persistent=False)
    yield client
    await client.close()


@pytest.fixture(scope="session")
def hardened_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One whole mesh with test-sized gateway limits, shared by tests/gateway and tests/fuzz."""
    from tests.gateway.hardened import hardened_mesh as start

    yield from start(tmp_path_factory.mktemp("hardened-mesh"))
