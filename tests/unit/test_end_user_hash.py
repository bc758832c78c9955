"""The end user's pseudonym (issue 14): keyed, per tenant, and reproducible by an auditor who
holds the key (``stellwerk audit end-user``) — never the raw id."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from services.audit.cli import app as audit_app
from services.kernel.end_user import end_user_hash
from services.runtime.settings import DEFAULT_CONFIG

PERSON = "alice@example.com"


def test_the_pseudonym_is_keyed_and_per_tenant() -> None:
    keyed = end_user_hash("acme-insurance", PERSON, "pepper-1")
    assert len(keyed) == 32 and PERSON not in keyed
    assert keyed == end_user_hash("acme-insurance", PERSON, "pepper-1")  # stable: limits and reports work
    assert keyed != end_user_hash("acme-insurance", PERSON, "pepper-2")  # the key matters
    assert keyed != end_user_hash("st-marien-klinikum", PERSON, "pepper-1")  # another tenant, another person
    assert keyed != end_user_hash("acme-insurance", PERSON, None)  # not the bare SHA-256 of a guessable id


def test_an_auditor_with_the_key_finds_who_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_TEST_PEPPER", "pepper-1")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["end_user_hash_key"] = "os.environ/STELLWERK_TEST_PEPPER"
    config = tmp_path / "stellwerk.yaml"
    config.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    shown = runner.invoke(audit_app, ["end-user", "--tenant", "acme-insurance", "--config", str(config), PERSON])
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip() == end_user_hash("acme-insurance", PERSON, "pepper-1")
    piped = runner.invoke(audit_app, ["end-user", "--tenant", "acme-insurance", "--config", str(config), "-"],
                          input=PERSON + "\n")
    assert piped.output.strip() == shown.output.strip()
    empty = runner.invoke(audit_app, ["end-user", "--tenant", "acme-insurance", "--config", str(config), "-"],
                          input="\n")
    assert empty.exit_code == 2
