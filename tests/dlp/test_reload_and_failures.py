"""Reload of organisation identifiers and policy; failing closed on broken engines or policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.dlp.guard import DlpGuard, DlpUnavailable
from services.dlp.settings import DlpSettings
from tests.dlp.conftest import CONTEXT, spans

NEW_IDENTIFIER = """
  - entity: CONTRACT_ID
    patterns:
      - regex: '\\bVT-\\d{6}\\b'
        score: 0.7
    context: [vertrag, contract]
"""


def _types(guard: DlpGuard, text: str) -> set[str]:
    return {f.type for f in guard.screen([text], direction="input", context=CONTEXT).findings}


def test_org_identifier_added_on_reload(data_copy: DlpSettings) -> None:
    guard = DlpGuard.from_settings(data_copy)
    text = "Vertrag VT-123456 verlängern"
    assert "CONTRACT_ID" not in _types(guard, text)
    assert guard.reload() is False  # nothing changed yet

    with data_copy.org_identifiers_file.open("a", encoding="utf-8") as handle:
        handle.write(NEW_IDENTIFIER)
    assert guard.reload() is True
    screening = guard.screen([text], direction="input", context=CONTEXT)
    assert spans(screening, "CONTRACT_ID") == [(8, 17)]
    assert "CONTRACT_ID" in {i.entity for i in guard.org_identifiers}


def test_broken_org_file_keeps_last_good(data_copy: DlpSettings) -> None:
    guard = DlpGuard.from_settings(data_copy)
    data_copy.org_identifiers_file.write_text("identifiers:\n  - entity: lower_case\n    patterns: []\n")
    assert guard.reload() is False
    assert guard.last_reload_error is not None
    assert "CUSTOMER_ID" in _types(guard, "Kundennummer KD-42351163")


def test_unknown_checksum_is_rejected(data_copy: DlpSettings) -> None:
    data_copy.org_identifiers_file.write_text(
        "identifiers:\n  - entity: X_ID\n    patterns: [{regex: 'X\\d+'}]\n    checksum: crc99\n"
    )
    with pytest.raises(DlpUnavailable):
        DlpGuard.from_settings(data_copy)


def test_policy_reload_changes_version_and_threshold(data_copy: DlpSettings) -> None:
    guard = DlpGuard.from_settings(data_copy)
    before = guard.policy_version
    data_file = data_copy.policy_dir / "data.json"
    data_file.write_text(data_file.read_text().replace('"medical_min_terms_for_density": 3', '"medical_min_terms_for_density": 4'))
    assert guard.reload() is True
    assert guard.policy_version != before


def test_broken_policy_edit_keeps_last_good(data_copy: DlpSettings) -> None:
    guard = DlpGuard.from_settings(data_copy)
    before = guard.policy_version
    (data_copy.policy_dir / "sensitivity.rego").write_text("package stellwerk.dlp\n\ndecision := {")
    assert guard.reload() is False
    assert guard.last_reload_error is not None
    screening = guard.screen(["Mail an jonas.weber@example.de"], direction="input", context=CONTEXT)
    assert (screening.decision.action, screening.decision.policy_version) == ("redact", before)


def test_broken_policy_at_start_fails_closed(data_copy: DlpSettings) -> None:
    (data_copy.policy_dir / "sensitivity.rego").write_text("package stellwerk.dlp\n\ndecision := {")
    with pytest.raises(DlpUnavailable):
        DlpGuard.from_settings(data_copy)


def test_missing_policy_dir_fails_closed(data_copy: DlpSettings, tmp_path: Path) -> None:
    settings = data_copy.model_copy(update={"policy_dir": tmp_path / "nowhere"})
    with pytest.raises(DlpUnavailable):
        DlpGuard.from_settings(settings)


def test_policy_without_decision_fails_closed(data_copy: DlpSettings) -> None:
    # Compiles, but yields no decision object: screening must raise, never default to allow.
    (data_copy.policy_dir / "sensitivity.rego").write_text(
        'package stellwerk.dlp\n\ndecision := "allow" if input.never_set\n'
    )
    guard = DlpGuard.from_settings(data_copy)
    with pytest.raises(DlpUnavailable):
        guard.screen(["Hallo"], direction="input", context=CONTEXT)


def test_policy_with_unknown_action_fails_closed(data_copy: DlpSettings) -> None:
    (data_copy.policy_dir / "sensitivity.rego").write_text(
        'package stellwerk.dlp\n\ndecision := {"action": "maybe", "rule_id": "x", "derived_sensitivity": "public"}\n'
    )
    guard = DlpGuard.from_settings(data_copy)
    with pytest.raises(DlpUnavailable):
        guard.screen(["Hallo"], direction="input", context=CONTEXT)


def test_engine_error_fails_closed(guard: DlpGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(text: str, language: str, disabled: frozenset[str] = frozenset()) -> list[object]:
        raise RuntimeError("engine down")

    monkeypatch.setattr(guard._detector, "detect", explode)
    with pytest.raises(DlpUnavailable) as info:
        guard.screen(["Hallo"], direction="input", context=CONTEXT)
    assert "RuntimeError" in str(info.value)
