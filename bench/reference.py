"""The two reference paths the gateway benchmarks compare Stellwerk with, on one simulator.

    uv run python bench/reference.py [--requests 200] [--ttft-ms 20] [--itl-ms 2]

* **the model direct**: the vLLM simulator (``python -m services.simulator``) as its own
  process, on a free port — :func:`running_simulator`;
* **LiteLLM Proxy**, pinned (``litellm[proxy]==1.102.4``), installed on first use into its
  own virtual environment (``.stellwerk/bench-venvs/litellm-proxy-1.102.4``, created with
  ``uv venv`` + ``uv pip install`` from PyPI and reused when present; it is not a project
  dependency and never imported here), configured with one model on the simulator's
  OpenAI-compatible base URL: no guardrails, no database, no callbacks, telemetry off,
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (nothing fetched from the network), a master key —
  :func:`running_litellm_proxy` / :func:`litellm_proxy`.

Run as a script it starts both, sends the same requests straight to the simulator and
through the proxy (one at a time), prints the added latency and stops everything.
Every process started here gets its own session (so a Ctrl-C in the terminal reaches only
this process, which then stops them in order) and is sent SIGTERM by the kernel should this
process die without cleaning up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stellwerk.supervisor import free_port  # outside the ephemeral range

LITELLM_VERSION = "1.102.4"
LITELLM_REQUIREMENT = f"litellm[proxy]=={LITELLM_VERSION}"
ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".stellwerk" / "bench-venvs"
LITELLM_VENV = VENVS / f"litellm-proxy-{LITELLM_VERSION}"
MASTER_KEY = "sk-bench-litellm-master"
SIMULATOR_MODEL = "stellwerk-local-llama"
# The proxy and the packages its server needs; a venv missing any of them is reinstalled.
_PROBE = (
    "import importlib.metadata as m, sys;"
    f"ok = m.version('litellm') == {LITELLM_VERSION!r};"
    "[m.version(p) for p in ('fastapi', 'uvicorn', 'orjson', 'backoff')];"
    "sys.exit(0 if ok else 1)"
)


class ReferenceStartError(RuntimeError):
    """A reference process could not be installed or did not come up; the message says why."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived: stop at the next safe point (every ``finally`` still runs)."""


_interrupted = False


def interrupt() -> None:
    """Ask every loop of the benchmark to stop at its next check (called by signal handlers:
    a cancellation alone can be swallowed by a library while the mesh is starting)."""
    global _interrupted
    _interrupted = True


def check_interrupted() -> None:
    if _interrupted:
        raise Interrupted


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench process dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- processes --------------------------------------------------------------------------


@dataclass
class Process:
    """One child process in its own session, with its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise ReferenceStartError(f"{self.name} is not running")
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace_s``; idempotent."""
        popen = self.popen
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        # Anything the process left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)

    def failure(self, what: str) -> ReferenceStartError:
        return ReferenceStartError(f"{self.name} {what}; last lines of {self.log_path}:\n{_tail(self.log_path)}")


async def wait_http_ok(process: Process, url: str, timeout_s: float,
                       headers: dict[str, str] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if the process exits."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            check_interrupted()
            if not process.alive:
                raise process.failure("exited during start-up")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, headers=headers) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise process.failure(f"did not answer {url} within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


# --- the simulator ------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorOptions:
    """Flags of the one simulator every path of a benchmark shares."""

    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    canned_text: str | None = None  # None: echo mode (the answer is the prompt)
    max_num_seqs: int = 256  # vLLM's default: nothing queues at 64 concurrent
    model: str = SIMULATOR_MODEL

    def argv(self, port: int) -> list[str]:
        argv = [
            sys.executable, "-m", "services.simulator", "--name", "bench", "--host", "127.0.0.1",
            "--port", str(port), "--model", self.model, "--ttft-ms", str(self.ttft_ms),
            "--itl-ms", str(self.itl_ms), "--max-num-seqs", str(self.max_num_seqs),
        ]
        if self.canned_text is not None:
            argv += ["--mode", "canned", "--canned-text", self.canned_text]
        return argv


@dataclass
class RunningSimulator:
    process: Process
    port: int
    model: str

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"


@contextlib.asynccontextmanager
async def running_simulator(options: SimulatorOptions, log_dir: Path,
                            timeout_s: float = 60.0) -> AsyncIterator[RunningSimulator]:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = Process("simulator", options.argv(port), log_dir / "simulator.log", env=env, cwd=ROOT)
    try:
        process.start()
        await wait_http_ok(process, f"http://127.0.0.1:{port}/health", timeout_s)
        yield RunningSimulator(process, port, options.model)
    finally:
        process.stop()


# --- LiteLLM Proxy ------------------------------------------------------------------------


def ensure_litellm_proxy(venv: Path = LITELLM_VENV, log: Callable[[str], None] = print) -> Path:
    """The ``litellm`` console script of the pinned proxy, installed into ``venv`` on first use.

    Serialised with a lock file, so two benchmarks starting at once install only once."""
    python, script = venv / "bin" / "python", venv / "bin" / "litellm"

    marker = venv / ".stellwerk-bench-ready"

    def installed() -> bool:
        return (marker.exists() and marker.read_text() == LITELLM_REQUIREMENT and script.exists()
                and subprocess.run([str(python), "-c", _PROBE], capture_output=True).returncode == 0)

    if installed():
        return script
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f".{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return script
        uv = shutil.which("uv")
        if uv is None:
            raise ReferenceStartError("uv is needed to install LiteLLM Proxy into its own environment")
        log(f"installing {LITELLM_REQUIREMENT} into {venv} (once)…")
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        if not python.exists():
            subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(venv)], check=True, env=env)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), LITELLM_REQUIREMENT],
                       check=True, env=env)
        # Byte-compile once: with PYTHONDONTWRITEBYTECODE set (as on these machines) the proxy
        # would otherwise compile LiteLLM's sources at every start (a minute of CPU on 2 cores).
        subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")],
                       env=env, stdout=subprocess.DEVNULL)
        marker.write_text(LITELLM_REQUIREMENT)
        if not installed():
            raise ReferenceStartError(f"{LITELLM_REQUIREMENT} did not install into {venv}")
    return script


def proxy_config(simulator_base_url: str, model: str, provider: str = "hosted_vllm",
                 master_key: str = MASTER_KEY) -> dict[str, Any]:
    """One model on the simulator under its own name; nothing but routing and auth."""
    return {
        "model_list": [{
            "model_name": model,
            "litellm_params": {
                "model": f"{provider}/{model}",
                "api_base": simulator_base_url,
                "api_key": "sk-unused",
            },
        }],
        "litellm_settings": {"telemetry": False, "drop_params": True, "set_verbose": False},
        "general_settings": {"master_key": master_key},
    }


def proxy_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "DATABASE_URL"} and not k.startswith("STELLWERK_")
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # the cost map in the wheel, not from the network
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class RunningProxy:
    process: Process
    port: int
    model: str
    master_key: str

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}


@contextlib.asynccontextmanager
async def running_litellm_proxy(
    simulator_base_url: str,
    model: str,
    *,
    provider: str = "hosted_vllm",
    port: int | None = None,
    log_dir: Path | None = None,
    startup_timeout_s: float = 180.0,
    venv: Path = LITELLM_VENV,
) -> AsyncIterator[RunningProxy]:
    """LiteLLM Proxy on 127.0.0.1 in front of ``simulator_base_url``; stopped on exit."""
    script = await asyncio.to_thread(ensure_litellm_proxy, venv)
    with tempfile.TemporaryDirectory(prefix="litellm-proxy-") as tmp:
        workdir = Path(tmp)
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump(proxy_config(simulator_base_url, model, provider)))
        port = port or free_port()
        process = Process(
            "litellm-proxy",
            [str(script), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1"],
            (log_dir or workdir) / "litellm-proxy.log", env=proxy_env(), cwd=workdir,
        )
        try:
            process.start()
            await wait_http_ok(process, f"http://127.0.0.1:{port}/health/liveliness", startup_timeout_s)
            yield RunningProxy(process, port, model, MASTER_KEY)
        finally:
            process.stop()


@contextlib.asynccontextmanager
async def litellm_proxy(simulator_base_url: str, model: str, **options: Any) -> AsyncIterator[str]:
    """LiteLLM Proxy in front of the simulator; yields its base URL (``http://127.0.0.1:P/v1``).

    The proxy serves ``model`` under the same name and wants ``Authorization: Bearer``
    :data:`MASTER_KEY`."""
    async with running_litellm_proxy(simulator_base_url, model, **options) as proxy:
        yield proxy.base_url


# --- as a script ----------------------------------------------------------------------------


async def _compare(requests: int, ttft_ms: float, itl_ms: float) -> None:
    import statistics

    import aiohttp

    with tempfile.TemporaryDirectory(prefix="stellwerk-reference-") as tmp:
        async with running_simulator(SimulatorOptions(ttft_ms=ttft_ms, itl_ms=itl_ms), Path(tmp)) as sim:
            print(f"simulator on {sim.base_url}; starting LiteLLM Proxy {LITELLM_VERSION}…")
            started = time.perf_counter()
            async with running_litellm_proxy(sim.base_url, sim.model, log_dir=Path(tmp)) as proxy:
                print(f"LiteLLM Proxy on {proxy.base_url}, ready after {time.perf_counter() - started:.1f} s")
                body = {"model": sim.model, "max_tokens": 32,
                        "messages": [{"role": "user", "content": "Fasse den Vorgang in drei Sätzen zusammen."}]}
                async with aiohttp.ClientSession() as http:
                    for name, base, headers in (("direct → simulator", sim.base_url, {}),
                                                ("LiteLLM Proxy → simulator", proxy.base_url, proxy.headers)):
                        times = []
                        for index in range(requests + 10):
                            t0 = time.perf_counter()
                            async with http.post(base + "/chat/completions", json=body, headers=headers) as r:
                                if r.status != 200:
                                    raise ReferenceStartError(f"{name}: HTTP {r.status}: {await r.text()}")
                                await r.read()
                            if index >= 10:  # the first ten warm up
                                times.append((time.perf_counter() - t0) * 1000)
                        print(f"{name:28} p50 {statistics.median(times):7.2f} ms   "
                              f"max {max(times):7.2f} ms   ({requests} requests, one at a time)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--install-only", action="store_true", help="install the proxy's venv and exit")
    args = parser.parse_args(argv)
    if args.install_only:
        print(ensure_litellm_proxy())
        return
    try:
        asyncio.run(_compare(args.requests, args.ttft_ms, args.itl_ms))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
