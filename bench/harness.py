"""What ``bench/pipeline.py`` and ``bench/streaming.py`` share: the three paths on one
simulator, load generation that counts errors instead of stopping, CPU seconds per process
from ``/proc``, percentiles, and clean shutdown on Ctrl-C / SIGTERM.

Load comes from aiohttp, not httpx: on this machine httpx's client costs ~4 ms of CPU per
request against ~0.4 ms for aiohttp, and the load generator shares the two cores with
everything it measures. Its own CPU is reported as ``bench client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp
import yaml
from rich.console import Console

from bench.reference import (
    LITELLM_VERSION,
    Interrupted,
    RunningProxy,
    RunningSimulator,
    SimulatorOptions,
    check_interrupted,
    interrupt,
    running_litellm_proxy,
    running_simulator,
)
from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.supervisor import Mesh, free_port, parse_scale

T = TypeVar("T")
API_KEY = "sk-stellwerk-demo"  # the default config's demo key
CLK_TCK = os.sysconf("SC_CLK_TCK")
DIRECT, LITELLM, STELLWERK = "direct", "litellm", "stellwerk"
PATH_TITLES = {
    DIRECT: "direct → simulator",
    LITELLM: f"LiteLLM Proxy {LITELLM_VERSION} → simulator",
    STELLWERK: "Stellwerk gateway → full mesh",
}
SHORT_TITLES = {DIRECT: "direct", LITELLM: "LiteLLM Proxy", STELLWERK: "Stellwerk"}
CLIENT = "bench client"

# Benign text (no names, identifiers or contact data): every path does the same work for it,
# and output screening has nothing to redact.
_PROMPT_TEXT = (
    "Bitte fasse den folgenden Vorgang kurz zusammen: Wasserschaden im Keller, das Gutachten "
    "liegt vor, die Trocknung ist beauftragt und die Kosten werden nach Abschluss geprüft. "
)
_ANSWER_TEXT = (
    "The review of the request is complete. All documents are available and the assessment "
    "follows the usual guidelines for water damage in residential buildings. The drying of the "
    "basement has been commissioned, and the costs will be checked once the work is finished. "
    "No further information is needed at this stage, and the next step is the final report. "
)


def prompt_text(chars: int) -> str:
    """A prompt of exactly ``chars`` characters."""
    text = _PROMPT_TEXT * (chars // len(_PROMPT_TEXT) + 1)
    return text[:chars].rstrip().ljust(chars, ".")


def answer_text(tokens: int) -> str:
    """An answer the simulator counts as exactly ``tokens`` cl100k tokens (its tokenizer)."""
    from services.simulator.tokenizer import cl100k

    encoding = cl100k()
    ids = encoding.encode_ordinary(_ANSWER_TEXT * (tokens // 50 + 2))
    for cut in range(tokens, tokens + 8):
        text = encoding.decode(ids[:cut])
        if len(encoding.encode_ordinary(text)) == tokens:
            return text
    return encoding.decode(ids[:tokens])


# --- statistics ---------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def fmt_ms(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return text if abs(value) >= 10 else (f"{value:+.2f}" if signed else f"{value:.2f}")


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# --- CPU from /proc -------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid → (ppid, own CPU ticks, ticks of reaped children) for every process we may read."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # Field 2 (comm) may hold spaces and parentheses: split after its last ')'.
        rest = raw[raw.rindex(b")") + 2:].split()
        table[int(entry.name)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]))
    return table


def _trees(roots: Mapping[str, int], table: Mapping[int, tuple[int, int, int]]) -> dict[str, list[int]]:
    """Each named process and its live descendants (e.g. the tool gateway's MCP servers)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    trees: dict[str, list[int]] = {}
    for name, root in roots.items():
        pids, stack = [], [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                pids.append(pid)
                stack.extend(children.get(pid, ()))
        trees[name] = pids
    return trees


def cpu_seconds(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user + system, all threads) of each named process and its live
    descendants plus the children they have reaped."""
    table = _proc_table()
    return {name: sum(table[pid][1] + table[pid][2] for pid in pids) / CLK_TCK
            for name, pids in _trees(roots, table).items()}


def rss_bytes(roots: Mapping[str, int]) -> dict[str, int]:
    """Resident memory (VmRSS) of each named process and its live descendants."""
    return {name: sum(_rss(pid) for pid in pids) for name, pids in _trees(roots, _proc_table()).items()}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def peak_rss(roots: Mapping[str, int], stop: asyncio.Event, every_s: float = 0.2) -> dict[str, int]:
    """The highest resident memory of each process, sampled until ``stop`` is set."""
    peak: dict[str, int] = {}
    while not stop.is_set():
        for name, value in rss_bytes(roots).items():
            peak[name] = max(peak.get(name, 0), value)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return peak


def own_cpu_seconds() -> float:
    """This process alone (its children are the measured processes, counted separately)."""
    times = os.times()
    return times.user + times.system


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process, ours or not)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


@dataclass
class CpuSnapshot:
    processes: dict[str, float]
    client: float
    machine: float
    wall: float

    @classmethod
    def take(cls, roots: Mapping[str, int]) -> CpuSnapshot:
        return cls(cpu_seconds(roots), own_cpu_seconds(), machine_busy_seconds(), time.perf_counter())

    def until(self, later: CpuSnapshot) -> CpuUse:
        processes = {n: later.processes[n] - self.processes.get(n, 0.0) for n in later.processes}
        client = later.client - self.client
        machine = later.machine - self.machine
        return CpuUse(processes, client, max(0.0, machine - sum(processes.values()) - client),
                      later.wall - self.wall)


@dataclass
class CpuUse:
    processes: dict[str, float]  # CPU seconds per measured process
    client: float  # the load generator (this process)
    other: float  # everything else on the machine: other users of the shared cores
    wall: float

    def as_dict(self, requests: int) -> dict[str, Any]:
        per = max(requests, 1)
        return {
            "window_s": round(self.wall, 3),
            "cpu_s": {k: round(v, 3) for k, v in self.processes.items()},
            "cpu_ms_per_request": {k: round(v * 1000 / per, 3) for k, v in self.processes.items()},
            "system_under_test_cpu_ms_per_request": round(sum(self.processes.values()) * 1000 / per, 3),
            "client_cpu_ms_per_request": round(self.client * 1000 / per, 3),
            "other_load_cpu_s": round(self.other, 3),
        }


async def idle_cpu(roots: Mapping[str, int], seconds: float = 3.0) -> dict[str, float]:
    """CPU milliseconds per wall second each process burns doing nothing (heartbeats, polls)."""
    before = CpuSnapshot.take(roots)
    await asyncio.sleep(seconds)
    use = before.until(CpuSnapshot.take(roots))
    return {k: round(v * 1000 / use.wall, 3) for k, v in use.processes.items()}


# --- load -----------------------------------------------------------------------------------


class HttpStatusError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, HttpStatusError):
        return f"HTTP {exc.status}"
    return type(exc).__name__


@dataclass
class Run(Generic[T]):
    """What ``drive`` saw: per successful call its latency (ms) and what it returned."""

    latencies_ms: list[float] = field(default_factory=list)
    samples: list[T] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0


async def drive(call: Callable[[], Awaitable[T]], requests: int, concurrency: int) -> Run[T]:
    """``requests`` calls from ``concurrency`` callers; a failed call is counted, not fatal."""
    run: Run[T] = Run()
    queue: Iterator[int] = iter(range(requests))

    async def caller() -> None:
        for _ in queue:
            check_interrupted()
            started = time.perf_counter()
            try:
                sample = await call()
            except (aiohttp.ClientError, TimeoutError, HttpStatusError, ValueError) as exc:
                run.errors[error_kind(exc)] += 1
                run.first_error = run.first_error or f"{error_kind(exc)}: {str(exc)[:300]}"
                continue
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
            run.samples.append(sample)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(max(1, min(concurrency, requests)))))
    run.wall_s = time.perf_counter() - started
    return run


def client_session(concurrency: int, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1) + 4, limit_per_host=0,
                                     force_close=False, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


@dataclass(frozen=True)
class Target:
    """One path to the model: where to POST, as whom, with which model name."""

    key: str
    url: str
    model: str
    headers: dict[str, str]
    processes: Callable[[], dict[str, int]]  # name → pid of every process serving this path

    @property
    def title(self) -> str:
        return PATH_TITLES[self.key]


# --- the three paths -----------------------------------------------------------------------


def mesh_config(directory: Path, simulator: RunningSimulator) -> Path:
    """The default config on free ports, no simulators of its own, every deployment of every
    route on the shared simulator, rate limits far above what a benchmark sends (the limiter
    still runs, with the same work per request)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["gateway_port"] = free_port()
    config["simulators"] = []
    for deployment in config["deployments"]:
        deployment["api_base"] = simulator.base_url
        deployment["model"] = simulator.model
    unlimited = {"requests": 1e9, "tokens": 1e12, "per_s": 60}
    directory.mkdir(parents=True, exist_ok=True)
    config["rate_limits"] = {
        "completion_tokens_estimate": 512,
        "users": {"*": unlimited}, "teams": {"*": unlimited}, "endpoints": {"*": unlimited},
    }
    path = directory / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def running_mesh(directory: Path, simulator: RunningSimulator,
                       scale: str | None = None) -> AsyncIterator[Mesh]:
    mesh = Mesh(config_file=mesh_config(directory, simulator), state_dir=directory / "state",
                nats_port=free_port(), scale=parse_scale(scale), start_simulators=False)
    try:
        await mesh.start()  # stops what it started if it fails
        yield mesh
    finally:
        await asyncio.to_thread(mesh.stop)


def mesh_processes(mesh: Mesh, simulator: RunningSimulator) -> dict[str, int]:
    roots = {part.name: part.process.pid for part in mesh.parts if part.process is not None}
    if mesh.nats_process is not None:
        roots["nats-server"] = mesh.nats_process.pid
    roots["simulator"] = simulator.process.pid
    return roots


def direct_target(sim: RunningSimulator) -> Target:
    return Target(DIRECT, sim.base_url + "/chat/completions", sim.model, {},
                  lambda: {"simulator": sim.process.pid})


def litellm_target(proxy: RunningProxy, sim: RunningSimulator) -> Target:
    return Target(LITELLM, proxy.base_url + "/chat/completions", proxy.model, proxy.headers,
                  lambda: {"litellm-proxy": proxy.process.pid, "simulator": sim.process.pid})


def stellwerk_target(mesh: Mesh, sim: RunningSimulator) -> Target:
    return Target(STELLWERK, mesh.gateway_url + "/v1/chat/completions", "stellwerk",
                  {"Authorization": f"Bearer {API_KEY}"}, lambda: mesh_processes(mesh, sim))


@dataclass
class Scenario:
    """The three paths, each started only for its own phases, all on one simulator."""

    simulator: SimulatorOptions
    workdir: Path
    scale: str | None = None
    log: Callable[[str], None] = print

    @contextlib.asynccontextmanager
    async def paths(self) -> AsyncIterator[AsyncIterator[Target]]:
        """Yields an async iterator of targets: the simulator direct, then LiteLLM Proxy
        (started when asked for, stopped before the next), then the Stellwerk mesh."""
        logs = self.workdir / "logs"
        async with running_simulator(self.simulator, logs) as sim:

            async def targets() -> AsyncIterator[Target]:
                check_interrupted()
                yield direct_target(sim)
                self.log(f"starting LiteLLM Proxy {LITELLM_VERSION}…")
                started = time.perf_counter()
                async with running_litellm_proxy(sim.base_url, sim.model, log_dir=logs) as proxy:
                    check_interrupted()
                    self.log(f"LiteLLM Proxy ready after {time.perf_counter() - started:.0f} s")
                    yield litellm_target(proxy, sim)
                check_interrupted()
                self.log("starting the Stellwerk mesh…")
                started = time.perf_counter()
                async with running_mesh(self.workdir / "mesh", sim, self.scale) as mesh:
                    check_interrupted()
                    self.log(f"mesh ready after {time.perf_counter() - started:.0f} s "
                             f"({len(mesh.parts)} processes + nats-server)")
                    yield stellwerk_target(mesh, sim)

            generator = targets()
            try:
                yield generator
            finally:
                await generator.aclose()  # stops the proxy or the mesh if still running


# --- running and reporting -----------------------------------------------------------------


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-") as tmp:
        yield Path(tmp)


def console() -> Console:
    """Rich console; wide enough for the tables when the output goes to a file or a pipe."""
    plain = Console()
    return plain if plain.is_terminal else Console(width=160)


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else round(value, 3)


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main``; Ctrl-C and SIGTERM cancel it, so every ``finally`` stops what it started."""

    async def guarded() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            # The flag stops the next loop iteration even if a library swallows the cancel.
            interrupt()
            if task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await main()

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError, Interrupted):
        print("interrupted; everything started was stopped", file=sys.stderr)
        raise SystemExit(130) from None


def parse_concurrency(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise ValueError(f"--concurrency wants positive integers, got {text!r}")
    return values
