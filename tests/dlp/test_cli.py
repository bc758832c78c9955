"""``stellwerk dlp check``: human, --json and --jsonl output; values only as placeholders."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from services.dlp.cli import app

runner = CliRunner()
SECRET_MAIL = "jonas.weber@example.de"
SECRET_PHONE = "0171 2345678"


def test_check_json_redact() -> None:
    text = f"Schreib an {SECRET_MAIL} oder ruf {SECRET_PHONE} an."
    result = runner.invoke(app, ["check", "--json"], input=text)
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["action"] == "redact"
    assert record["rule_id"] == "dlp.redact.pii"
    assert record["policy_version"].startswith("sha256:")
    assert record["language"] == "de"
    assert record["has_pii"] is True
    assert [(e["type"], e["start"], e["end"]) for e in record["entities"]] == [
        ("EMAIL_ADDRESS", 11, 33), ("PHONE_NUMBER", 43, 55)]
    assert record["redacted_text"] == "Schreib an <EMAIL_ADDRESS> oder ruf <PHONE_NUMBER> an."
    leaked = SECRET_MAIL in result.stdout or SECRET_PHONE in result.stdout
    assert leaked is False


def test_check_human_output_has_no_values() -> None:
    result = runner.invoke(app, ["check"], input=f"Mail {SECRET_MAIL}")
    assert result.exit_code == 0
    assert "REDACT" in result.stdout
    leaked = SECRET_MAIL in result.stdout
    assert leaked is False


def test_check_output_block_is_a_standard_error() -> None:
    text = "Frau Keller ist wegen einer Depression krankgeschrieben."
    result = runner.invoke(app, ["check", "--json", "--direction", "output"], input=text)
    record = json.loads(result.stdout)
    assert record["action"] == "block"
    assert record["error"]["code"] == "dlp_blocked_output"
    assert "redacted_text" not in record
    leaked = "Keller" in result.stdout
    assert leaked is False


def test_check_jsonl() -> None:
    lines = [
        json.dumps({"id": "a", "text": f"Mail {SECRET_MAIL}"}),
        json.dumps({"id": 7, "text": "Welche Nebenwirkungen hat Ibuprofen?", "direction": "output"}),
        "not json",
        json.dumps({"text": "Sarah Connor has diabetes.", "direction": "input"}),
    ]
    result = runner.invoke(app, ["check", "--jsonl"], input="\n".join(lines) + "\n")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r.get("id"), r.get("action")) for r in records] == [
        ("a", "redact"), (7, "allow"), (3, None), (4, "block")]
    assert records[1]["direction"] == "output"
    assert records[2]["error"]["code"] == "invalid_request"
    assert result.exit_code == 1  # one line could not be screened
    leaked = SECRET_MAIL in result.stdout or "Connor" in result.stdout
    assert leaked is False


def test_bad_direction_is_a_usage_error() -> None:
    result = runner.invoke(app, ["check", "--direction", "sideways"], input="x")
    assert result.exit_code == 2
