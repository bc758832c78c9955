"""The ``stellwerk`` command as a user runs it: up, chat, status, schemas export."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.kernel.cli_conventions import MESH_UNREACHABLE
from stellwerk.supervisor import Mesh, free_port
from tests.integration.mesh import write_test_config

CLI = [sys.executable, "-m", "stellwerk"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_chat_prints_answer_and_decisions(mesh: Mesh) -> None:
    result = run_cli("chat", "Wann kommt der Techniker?", "--nats-url", mesh.url,
                     "--config", str(mesh.config_file), "--format", "json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "ok"
    assert body["content"] == "Wann kommt der Techniker?"
    assert body["dlp_input"]["action"] == "allow"
    assert body["routing"]["rule_id"]
    assert body["usage"]["prompt_tokens"] > 0
    table = run_cli("chat", "Noch eine Frage", "--nats-url", mesh.url, "--config", str(mesh.config_file))
    assert table.returncode == 0, table.stderr
    assert "router" in table.stdout and "dlp input" in table.stdout and "usage" in table.stdout


def test_status_lists_workers_and_consumers(mesh: Mesh) -> None:
    result = run_cli("status", "--nats-url", mesh.url, "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1, "jsonl: one compact line"
    report = json.loads(result.stdout)
    for service in ("dlp", "router", "inference", "finops", "audit"):
        assert len(report["workers"][service]) >= 1, service
    consumers = {c["consumer"]: c for c in report["consumers"]}
    assert set(consumers) == {"dlp-input", "router", "inference", "dlp-output", "dlp-stream", "finops", "audit"}
    assert all(c["exists"] for c in consumers.values())


@pytest.mark.parametrize("command", [
    ["status"], ["chat", "Hallo"], ["policy", "push", "services/router/policies"], ["finops", "report"],
    ["finops", "budget", "list"], ["audit", "verify"], ["audit", "show", "req-1"], ["tools", "list"],
    ["approvals", "list"],
], ids=" ".join)
def test_an_unreachable_mesh_is_the_same_exit_code_everywhere(command: list[str]) -> None:
    result = run_cli(*command, "--nats-url", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == MESH_UNREACHABLE, result.stderr[-2000:]
    assert "cannot reach the mesh" in result.stderr
    assert "Traceback" not in result.stderr


def test_schemas_export(tmp_path: Path) -> None:
    result = run_cli("schemas", "export", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"RequestSubmitted.schema.json", "AuditEvent.schema.json", "asyncapi.json"} <= files
    asyncapi = json.loads((tmp_path / "out" / "asyncapi.json").read_text())
    addresses = {c["address"] for c in asyncapi["channels"].values()}
    assert "stellwerk.v1.request.submitted" in addresses and "stellwerk.v1.usage.recorded" in addresses
    audit = json.loads((tmp_path / "out" / "AuditEvent.schema.json").read_text())
    string_fields = [k for k, v in audit["properties"].items() if v.get("type") == "string" and "pattern" not in v
                     and "enum" not in v and v.get("format") != "date-time"]
    assert string_fields == [], "AuditEvent must not have a free-text field"


def test_up_starts_everything_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    config = write_test_config(tmp_path)
    nats_port = free_port()
    process = subprocess.Popen(
        [*CLI, "up", "--config", str(config), "--nats-port", str(nats_port), "--state-dir", str(tmp_path / "state"),
         "--scale", "dlp=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        banner = ""
        deadline = time.monotonic() + 150
        assert process.stdout is not None
        while "Ctrl-C" not in banner:
            line = process.stdout.readline()
            assert line or process.poll() is None, process.stderr.read() if process.stderr else ""
            banner += line
            assert time.monotonic() < deadline, banner
        assert "/v1" in banner and "sk-stellwerk-demo" in banner
        status = run_cli("status", "--nats-url", f"nats://127.0.0.1:{nats_port}", "--json")
        assert len(json.loads(status.stdout)["workers"]["dlp"]) == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", nats_port)) != 0, "embedded NATS was stopped"


def test_up_fails_clearly_when_a_port_is_taken(tmp_path: Path) -> None:
    config = write_test_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_cli("up", "--config", str(config), "--nats-port", str(port), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr


@pytest.mark.parametrize("scale", ["dlp=x", "nosuch=1"])
def test_up_rejects_a_bad_scale(scale: str) -> None:
    result = run_cli("up", "--scale", scale)
    assert result.returncode == 2
    assert "invalid --scale" in result.stderr
