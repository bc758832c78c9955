"""Secrets by reference (issue 14): ``os.environ/NAME`` and ``file:/path`` in the config,
resolved at load time, never in a repr; plaintext is refused unless explicitly allowed for
local development."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.runtime.settings import ALLOW_PLAINTEXT_ENV, DEFAULT_CONFIG, load_config, plaintext_secrets

SECRET = "sk-provider-Quokka-4711"


def config_with(tmp_path: Path, api_key: str) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["deployments"][1]["api_key"] = api_key
    path = tmp_path / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_an_environment_reference_is_resolved_at_load_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_TEST_PROVIDER_KEY", SECRET)
    config = load_config(config_with(tmp_path, "os.environ/STELLWERK_TEST_PROVIDER_KEY"))
    deployment = config.deployments[1]
    assert deployment.api_key == SECRET
    assert SECRET not in repr(deployment) and SECRET not in repr(config) and SECRET not in str(deployment)


def test_a_file_reference_is_resolved_and_stripped(tmp_path: Path) -> None:
    secret_file = tmp_path / "provider-key"
    secret_file.write_text(SECRET + "\n")
    assert load_config(config_with(tmp_path, f"file:{secret_file}")).deployments[1].api_key == SECRET


def test_a_broken_reference_fails_the_load_naming_the_reference_not_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STELLWERK_TEST_MISSING_KEY", raising=False)
    with pytest.raises(ValidationError, match="STELLWERK_TEST_MISSING_KEY is not set"):
        load_config(config_with(tmp_path, "os.environ/STELLWERK_TEST_MISSING_KEY"))
    with pytest.raises(ValidationError, match="cannot read"):
        load_config(config_with(tmp_path, f"file:{tmp_path / 'absent'}"))


def test_plaintext_is_refused_naming_the_place_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_PLAINTEXT_ENV, raising=False)
    path = config_with(tmp_path, SECRET)
    name = yaml.safe_load(path.read_text())["deployments"][1]["name"]
    with pytest.raises(ValidationError, match=f"plaintext secrets in the config \\(deployment {name}\\)") as refused:
        load_config(path)
    assert SECRET not in str(refused.value)
    assert plaintext_secrets(yaml.safe_load(path.read_text())) == [f"deployment {name}"]
    assert plaintext_secrets(yaml.safe_load(DEFAULT_CONFIG.read_text())) == []


def test_a_plaintext_end_user_hash_key_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PLAINTEXT_ENV, raising=False)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["end_user_hash_key"] = "pepper-in-plaintext"
    path = tmp_path / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="end_user_hash_key"):
        load_config(path)
    monkeypatch.setenv("STELLWERK_TEST_PEPPER", "pepper-by-reference")
    raw["end_user_hash_key"] = "os.environ/STELLWERK_TEST_PEPPER"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    # Resolved where it is used (the gateway at start), so other services need no such secret.
    assert config.end_user_key() == "pepper-by-reference"
    raw["end_user_hash_key"] = "file:/nonexistent/end-user-key"
    path.write_text(yaml.safe_dump(raw))
    unresolved = load_config(path)  # loads: the DLP worker or the router never needs the key
    with pytest.raises(ValueError, match="cannot read"):
        unresolved.end_user_key()


def test_plaintext_loads_where_local_development_allows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PLAINTEXT_ENV, raising=False)
    raw = yaml.safe_load(config_with(tmp_path, SECRET).read_text())
    raw["allow_plaintext_secrets"] = True
    allowed = tmp_path / "dev.yaml"
    allowed.write_text(yaml.safe_dump(raw))
    assert load_config(allowed).deployments[1].api_key == SECRET
    monkeypatch.setenv(ALLOW_PLAINTEXT_ENV, "1")
    assert load_config(config_with(tmp_path, SECRET)).deployments[1].api_key == SECRET


def test_stellwerk_up_refuses_plaintext_provider_keys(tmp_path: Path) -> None:
    path = config_with(tmp_path, SECRET)
    env = {k: v for k, v in os.environ.items() if k != ALLOW_PLAINTEXT_ENV}
    # Refused before anything starts (the --scale would be invalid too: the refusal comes first).
    result = subprocess.run([sys.executable, "-m", "stellwerk", "up", "--config", str(path), "--scale", "dlp=x"],
                            capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 2
    assert "plaintext secrets in the config" in result.stderr and "allow_plaintext_secrets" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_the_consoles_client_secret_is_a_secret_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PLAINTEXT_ENV, raising=False)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["oidc"] = {"issuer": "https://idp.example", "audience": "stellwerk-gateway"}
    raw["console_oidc"] = {"client_id": "stellwerk-console", "client_secret": SECRET}
    path = tmp_path / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match=r"console_oidc\.client_secret") as refused:
        load_config(path)
    assert SECRET not in str(refused.value)
    monkeypatch.setenv("STELLWERK_TEST_CONSOLE_SECRET", SECRET)
    raw["console_oidc"]["client_secret"] = "os.environ/STELLWERK_TEST_CONSOLE_SECRET"
    path.write_text(yaml.safe_dump(raw))
    console = load_config(path).console_oidc
    assert console is not None and console.secret() == SECRET and SECRET not in repr(console)
