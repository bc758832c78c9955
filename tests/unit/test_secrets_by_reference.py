"""Secrets by reference (issue 14): ``os.environ/NAME`` and ``file:/path`` in the config,
resolved at load time, never in a repr; plaintext still loads and ``stellwerk up`` warns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.runtime.settings import DEFAULT_CONFIG, load_config, plaintext_secrets

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


def test_plaintext_still_loads_and_is_listed(tmp_path: Path) -> None:
    path = config_with(tmp_path, SECRET)
    config = load_config(path)
    assert config.deployments[1].api_key == SECRET
    assert plaintext_secrets(yaml.safe_load(path.read_text())) == [config.deployments[1].name]
    assert plaintext_secrets(yaml.safe_load(DEFAULT_CONFIG.read_text())) == []


def test_stellwerk_up_warns_about_plaintext_provider_keys(tmp_path: Path) -> None:
    path = config_with(tmp_path, SECRET)
    # An invalid --scale ends the command before anything starts; the warning comes first.
    result = subprocess.run([sys.executable, "-m", "stellwerk", "up", "--config", str(path), "--scale", "dlp=x"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "api_key is plaintext" in result.stderr and SECRET not in result.stderr + result.stdout
