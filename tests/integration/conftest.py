"""A whole mesh — real nats-server, every service as its own process — shared by the e2e tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from nats.aio.client import Client

from services.runtime.bus import connect
from stellwerk.supervisor import Mesh
from tests.conftest import start_nats
from tests.integration.mesh import write_test_config


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("mesh")
    nats_process, url = start_nats(root / "nats")
    mesh = Mesh(
        config_file=write_test_config(root),
        state_dir=root / "state",
        nats_url=url,
        extra_env={"STELLWERK_ACK_WAIT_S": "2", "STELLWERK_TRACE_FILE": str(root / "traces.jsonl")},
        expose_metrics=True,
    )
    asyncio.run(mesh.start())
    yield mesh
    mesh.stop()
    nats_process.terminate()
    nats_process.wait(timeout=5)


@pytest_asyncio.fixture(loop_scope="session")
async def nc(mesh: Mesh) -> AsyncIterator[Client]:
    client = await connect(mesh.url, "test", persistent=False)
    yield client
    await client.close()


