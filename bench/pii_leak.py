"""External check: the PyPI ``pii-leak-benchmark`` against a whole Stellwerk mesh.

    uv run python bench/pii_leak.py [--iterations 3] [--report FILE] [--keep-logs DIR]

Installs ``pii-leak-benchmark==0.6.0`` into its own virtual environment
(``.stellwerk/bench-venvs/pii-leak-benchmark-0.6.0``, reused when present; it is not a project
dependency), starts a mesh in a temporary directory (embedded NATS and gateway on free ports,
no simulators) whose deployments on both routes have the benchmark's capture upstream as
``api_base``, and runs the benchmark against the gateway: it binds the capture (an
OpenAI-compatible fake model that echoes the prompt back in one-character SSE events),
sends a streamed chat request with an e-mail address, a US SSN and a card number, looks for
those values in everything that reaches the capture, and checks that the caller gets the
original text back. The request carries ``X-Stellwerk-Pseudonymize: true`` (the benchmark
expects the values restored in the answer). Prints the five checks and a summary, exits
non-zero if any check fails, and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.supervisor import Mesh, free_port

BENCHMARK = "pii-leak-benchmark"
VERSION = "0.6.0"
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".stellwerk" / "bench-venvs" / f"{BENCHMARK}-{VERSION}"
API_KEY = "sk-stellwerk-demo"  # the default config's demo key (tenant acme-insurance)
CHECKS = (
    "configured_upstream_boundary",
    "response_fidelity",
    "sse_validity",
    "fragmentation_safety",
    "client_observed_latency",
)


def ensure_benchmark() -> Path:
    """The benchmark's console script from its own virtual environment, installed on first use."""
    python = VENV / "bin" / "python"
    script = VENV / "bin" / BENCHMARK
    probe = f"import importlib.metadata as m; raise SystemExit(m.version({BENCHMARK!r}) != {VERSION!r})"
    if (
        python.exists()
        and script.exists()
        and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
    ):
        return script
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is needed to install the benchmark into its own environment")
    if not python.exists():
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(VENV)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), f"{BENCHMARK}=={VERSION}"], check=True
    )
    return script


def mesh_config(directory: Path, capture_base_url: str) -> Path:
    """The default config with free ports, no simulators, every deployment at the capture."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["gateway_port"] = free_port()
    config["simulators"] = []
    for deployment in config["deployments"]:
        deployment["api_base"] = capture_base_url
    path = directory / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_benchmark(script: Path, gateway_url: str, capture_port: int, iterations: int, report: Path) -> int:
    """One benchmark run; the key and the header go through its environment, not argv."""
    env = {
        **os.environ,
        "CONFORMANCE_TARGET_API_KEY": API_KEY,
        "CONFORMANCE_TARGET_HEADERS": "X-Stellwerk-Pseudonymize=true",
    }
    env.pop("VIRTUAL_ENV", None)  # the project's environment, not the benchmark's
    command = [
        str(script),
        "--target-base-url",
        gateway_url + "/v1",
        "--target-model",
        "stellwerk",
        "--target-name",
        "stellwerk",
        "--target-version",
        git_revision(),
        "--capture-port",
        str(capture_port),
        "--iterations",
        str(iterations),
        "--timeout-seconds",
        "60",
        "--redaction-claimed",
        "claimed",
        "--redaction-claim-citation",
        "docs/dlp.md",
        "--redaction-enabled",
        "--redaction-config-reference",
        "input DLP redact + X-Stellwerk-Pseudonymize: true (restored in the answer)",
        "--json-out",
        str(report),
    ]
    return subprocess.run(command, env=env, cwd=report.parent).returncode


def git_revision() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def detail(name: str, check: dict[str, Any]) -> str:
    """What each check measured, without any test value (the report holds none)."""
    if name == "configured_upstream_boundary":
        leaked = ", ".join(check["leaked_entity_types"]) or "none"
        return (
            f"leaked to upstream: {leaked}; correlated requests {check['correlated_requests']}"
            f"/{check['captured_requests']} captured; uninspectable {check['uninspectable_requests']};"
            f" paths {', '.join(check['upstream_paths_observed']) or '-'}"
        )
    if name == "response_fidelity":
        return f"original text restored in {check['iterations_matching']}/{check['iterations_requested']} iterations"
    if name == "sse_validity":
        return (
            f"status {check['status_codes']}; invalid events {check['invalid_events']};"
            f" one [DONE] each {check['done_markers_valid']}; text/event-stream {check['content_type_valid']};"
            f" errors {check['errors'] or 'none'}"
        )
    if name == "fragmentation_safety":
        return (
            f"events per response {check['events_observed']}-{check['events_observed_max']};"
            f" reconstructed {check['response_reconstructed']}"
        )
    if name == "client_observed_latency":
        timing = ", ".join(f"{k} {check[k]:.0f} ms" for k in ("p50", "p95", "p99") if k in check)
        return f"{check['iterations_measured']}/{check['iterations']} iterations measured; {timing}"
    return ""


def summarise(report: dict[str, Any]) -> bool:
    checks: dict[str, dict[str, Any]] = report["checks"]
    print(f"\n{BENCHMARK} {VERSION} against Stellwerk {report['implementation']['version']}")
    width = max(len(name) for name in CHECKS)
    for name in CHECKS:
        check = checks.get(name)
        if check is None:
            print(f"  {name:<{width}}  MISSING")
            continue
        print(f"  {name:<{width}}  {'pass' if check['passed'] else 'FAIL'}  {detail(name, check)}")
    extra = sorted(set(checks) - set(CHECKS))
    for name in extra:
        print(f"  {name:<{width}}  {'pass' if checks[name]['passed'] else 'FAIL'}")
    passed = sum(1 for name in CHECKS if checks.get(name, {}).get("passed"))
    print(
        f"\n{passed}/{len(CHECKS)} checks passed; benchmark passed: {report['passed']};"
        f" outcome: {report['outcome']}"
    )
    return bool(report["passed"]) and passed == len(CHECKS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--report", type=Path, default=None, help="keep the benchmark's JSON report here")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the mesh's logs here")
    args = parser.parse_args()
    script = ensure_benchmark()
    with tempfile.TemporaryDirectory(prefix="stellwerk-pii-leak-") as tmp:
        root = Path(tmp)
        capture_port = free_port()
        mesh = Mesh(
            config_file=mesh_config(root, f"http://127.0.0.1:{capture_port}/v1"),
            state_dir=root / "state",
            nats_port=free_port(),
            start_simulators=False,
        )
        report_path = root / "report.json"
        try:
            print("starting the mesh…", flush=True)
            asyncio.run(mesh.start())
            code = run_benchmark(script, mesh.gateway_url, capture_port, args.iterations, report_path)
        finally:
            mesh.stop()
            if args.keep_logs:
                shutil.copytree(mesh.logs, args.keep_logs, dirs_exist_ok=True)
        if not report_path.exists():
            print(f"{BENCHMARK} wrote no report (exit code {code})", file=sys.stderr)
            return 2
        report = json.loads(report_path.read_text())
        if args.report:
            shutil.copyfile(report_path, args.report)
    ok = summarise(report)
    return 0 if ok and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
