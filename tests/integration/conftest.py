"""A whole mesh — real nats-server, every service as its own process — shared by the e2e tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stellwerk.supervisor import Mesh
from tests.integration.mesh import running_mesh, write_test_config


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("mesh")
    with running_mesh(
        root,
        write_test_config(root),
        extra_env={"STELLWERK_ACK_WAIT_S": "2", "STELLWERK_TRACE_FILE": str(root / "traces.jsonl")},
        expose_metrics=True,
    ) as running:
        yield running
