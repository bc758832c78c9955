"""Every sensitivity rule: the Rego case table, and the same rules end to end through the guard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from services.dlp.guard import DlpGuard, Screening
from services.dlp.policy import ENTRYPOINT
from services.dlp.settings import PACKAGE_DIR
from services.runtime.rego import CompiledPolicy, run_case_table
from tests.dlp.conftest import CONTEXT

Screen = Callable[..., Screening]
POLICY_DIR = PACKAGE_DIR / "policies"


def test_policy_case_table() -> None:
    policy = CompiledPolicy.from_dir(POLICY_DIR, ENTRYPOINT)
    failures = run_case_table(policy, POLICY_DIR / "sensitivity_test.json")
    assert failures == []


def test_case_table_is_not_part_of_the_policy_version(tmp_path: Path) -> None:
    # Editing tests must not change the version stamped on every decision.
    before = CompiledPolicy.from_dir(POLICY_DIR, ENTRYPOINT).version
    assert (POLICY_DIR / "sensitivity_test.json").exists()
    assert before.startswith("sha256:")


# (case id, texts of one request, direction, expected action, expected rule id)
RULES: dict[str, tuple[list[str], str, str, str]] = {
    "nothing-found": (["Wie gruppiere ich eine Pivot-Tabelle nach Monaten?"], "input", "allow", "dlp.allow.no_pii"),
    "date-alone-is-not-pii": (["Das Meeting ist am 12.03.2025."], "input", "allow", "dlp.allow.no_pii"),
    "pii-redact-de": (["Schreib an jonas.weber@example.de wegen der Rechnung."], "input", "redact", "dlp.redact.pii"),
    "pii-redact-en": (["Please call Sarah Connor on (212) 555-0147."], "input", "redact", "dlp.redact.pii"),
    "pii-redact-output": (["Sure, the contact is jonas.weber@example.de."], "output", "redact", "dlp.redact.pii"),
    "pii-and-medical-block-de": (["Frau Keller ist wegen einer Depression krankgeschrieben."], "input", "block", "dlp.block.pii_with_medical"),
    "pii-and-medical-block-en": (["Sarah Connor was diagnosed with type 2 diabetes."], "input", "block", "dlp.block.pii_with_medical"),
    "pii-and-medical-across-messages": (
        ["Mein Kollege heißt Jonas Weber.", "Er nimmt seit Monaten Sertralin gegen seine Depression."],
        "input", "block", "dlp.block.pii_with_medical",
    ),
    "pii-and-medical-block-output": (["Jonas Weber should keep taking metformin for his diabetes."], "output", "block", "dlp.block.pii_with_medical"),
    "dense-medical-with-birth-date": (
        ["Patientin, geb. 03.04.1970: Diabetes mellitus Typ 2 (E11.9), Hypertonie (I10), Niereninsuffizienz; Metformin, Ramipril."],
        "input", "block", "dlp.block.dense_medical_identifying",
    ),
    "medical-anonymous-allow-de": (["Welche Nebenwirkungen hat Metformin bei Niereninsuffizienz?"], "input", "allow", "dlp.allow.medical_anonymous"),
    "medical-anonymous-allow-en": (["Explain the difference between type 1 and type 2 diabetes."], "input", "allow", "dlp.allow.medical_anonymous"),
    "medical-light-with-date-allow": (
        ["Das Team trifft sich am 12.03.2025 zur Budgetplanung, zur Roadmap und zur Einführung des neuen Ticketsystems; "
         "wegen der Grippewelle gibt es zusätzlich eine Videoeinwahl für alle, die nicht anreisen möchten."],
        "input", "allow", "dlp.allow.medical_low_density",
    ),
    "project-code-redact": (["Wie ist der Stand bei PRJ-2024-0042?"], "input", "redact", "dlp.redact.confidential_identifier"),
    "pseudonym-with-medical-output-block": (["<PERSON_1> sollte das Ibuprofen absetzen."], "output", "block", "dlp.block.pseudonym_with_medical"),
    "pseudonym-without-medical-output-allow": (["Ich habe <PERSON_1> eine Einladung geschickt."], "output", "allow", "dlp.allow.no_pii"),
}


@pytest.mark.parametrize("case", list(RULES))
def test_rule_end_to_end(guard: DlpGuard, case: str) -> None:
    texts, direction, action, rule_id = RULES[case]
    screening = guard.screen(texts, direction="input" if direction == "input" else "output", context=CONTEXT)
    assert (screening.decision.action, screening.decision.rule_id) == (action, rule_id)


def test_block_returns_no_text(screen: Screen) -> None:
    screening = screen("Frau Keller ist wegen einer Depression krankgeschrieben.", direction="output")
    assert screening.decision.action == "block"
    assert screening.texts is None


def test_allow_returns_the_original_texts(screen: Screen) -> None:
    texts = ["Wie spät ist es?", "Und morgen?"]
    screening = screen(*texts)
    assert screening.decision.action == "allow"
    unchanged = screening.texts == texts
    assert unchanged


def test_decision_metadata(screen: Screen, guard: DlpGuard) -> None:
    screening = screen("Sarah Connor was diagnosed with type 2 diabetes.")
    decision = screening.decision
    assert decision.policy_version == guard.policy_version
    assert decision.language == "en"
    assert decision.derived_sensitivity == "highly_confidential"
    assert decision.has_pii and decision.has_medical_terms
    assert 0 < decision.medical_term_density <= 1
    assert [(e.type, e.count) for e in decision.entities] == [("PERSON", 1)]
    assert screening.medical_categories == ["diagnosis"]


def test_thresholds_differ_per_direction(guard: DlpGuard) -> None:
    assert guard.config.min_score("DATE_TIME", "input") == 0.55
    assert guard.config.min_score("EMAIL_ADDRESS", "output") < guard.config.min_score("EMAIL_ADDRESS", "input")
