"""A production-like mesh: three clustered nats-servers with the generated per-service users,
streams and KV buckets replicated ×3, every service with its own credentials and metrics port.
Shared by the dashboard and failover tests (the failover test runs last and ends it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from stellwerk.supervisor import Mesh, Part, free_port
from tests.integration.mesh import write_test_config
from tests.ops.cluster import Cluster


@dataclass
class CredentialedMesh(Mesh):
    """Every part gets its own service's NATS user; the simulators and the gateway process
    get the gateway's (simulators never connect). The supervisor itself acts as ``operator``."""

    cluster: Cluster | None = None
    _user: str = field(default="gateway", repr=False)

    def env(self) -> dict[str, str]:
        assert self.cluster is not None
        return {**super().env(), **self.cluster.user_env(self._user)}

    def add_worker(self, service: str) -> Part:
        self._user = service
        try:
            return super().add_worker(service)
        finally:
            self._user = "gateway"

    async def start(self, timeout_s: float = 180.0) -> None:
        assert self.cluster is not None
        with pytest.MonkeyPatch.context() as patch:  # the supervisor's own connections
            for key, value in {**self.cluster.user_env("operator"), **self.extra_env}.items():
                patch.setenv(key, value)
            await super().start(timeout_s)


@dataclass
class OpsMesh:
    cluster: Cluster
    mesh: CredentialedMesh
    metrics_ports: dict[str, int]


@pytest.fixture(scope="session")
def ops_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsMesh]:
    root = tmp_path_factory.mktemp("ops")
    cluster = Cluster(root / "nats", size=3)
    cluster.start()
    ports = {"finops": free_port(), "audit": free_port(), "toolgateway": free_port()}
    mesh = CredentialedMesh(
        config_file=write_test_config(root),
        state_dir=root / "state",
        nats_url=cluster.url,
        extra_env={
            "STELLWERK_STREAM_REPLICAS": "3",
            "STELLWERK_ACK_WAIT_S": "3",
            "STELLWERK_FINOPS_METRICS_PORT": str(ports["finops"]),
            "STELLWERK_AUDIT_METRICS_PORT": str(ports["audit"]),
            "STELLWERK_TOOLGATEWAY_METRICS_PORT": str(ports["toolgateway"]),
        },
        expose_metrics=True,
        cluster=cluster,
    )
    try:
        asyncio.run(mesh.start())
        yield OpsMesh(cluster, mesh, ports)
    finally:
        mesh.stop()
        cluster.stop()
