"""Real nats-server processes with the generated per-service users: one node or a cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js.errors import APIError, ServiceUnavailableError

from stellwerk import nats_auth
from stellwerk.supervisor import free_port, nats_server_binary, port_in_use


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    store: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config)], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not port_in_use(self.port):
            assert self.process.poll() is None, f"nats-server {self.name} exited:\n{self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"nats-server {self.name} did not listen"
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no leadership hand-over — a crashed machine."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class Cluster:
    """``size`` nodes clustered on loopback (routes to each other), JetStream on every node,
    the generated ``STELLWERK`` account with one user per service; passwords in the env."""

    root: Path
    size: int = 3
    passwords: dict[str, str] = field(default_factory=nats_auth.new_secrets)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth_file = self.root / "auth.conf"
        self.auth_file.write_text(nats_auth.render_auth())
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        routes = [f"nats://127.0.0.1:{cluster}" for _, cluster in ports] if self.size > 1 else []
        for index, (port, cluster) in enumerate(ports, 1):
            name = f"n{index}"
            config = self.root / f"{name}.conf"
            config.write_text(nats_auth.render_server(
                name=name, port=port, store_dir=self.root / name, auth_file=Path(self.auth_file.name),
                cluster_port=cluster if self.size > 1 else None, routes=routes,
            ))
            self.nodes.append(Node(name, port, cluster, self.root / name, config, self.root / f"{name}.log"))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.passwords}

    @property
    def url(self) -> str:
        """The seed list every service gets: all nodes, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def password(self, user: str) -> str:
        return self.passwords[nats_auth.password_variable(user)]

    def user_env(self, user: str) -> dict[str, str]:
        return {"STELLWERK_NATS_USER": user, "STELLWERK_NATS_PASSWORD": self.password(user)}

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.env)
        asyncio.run(self.wait_jetstream())

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def connect(self, user: str, *, servers: list[str] | None = None, **options: object) -> Client:
        errors: list[Exception] = []

        async def collect(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(
            servers or [n.url for n in self.nodes], user=user, password=self.password(user),
            inbox_prefix=nats_auth.inbox_prefix(user), name=f"test-{user}", connect_timeout=3,
            error_cb=collect, **options,
        )
        nc.test_errors = errors  # type: ignore[attr-defined]
        return nc

    async def wait_jetstream(self, timeout_s: float = 30.0) -> None:
        """Until the JetStream meta group has a leader (the cluster accepts API requests)."""
        deadline = time.monotonic() + timeout_s
        nc = await self.connect("operator")
        try:
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except (ServiceUnavailableError, APIError, TimeoutError, nats.errors.Error):
                    assert time.monotonic() < deadline, "JetStream did not become available"
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()
