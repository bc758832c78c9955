"""Language detection, the medical layer, checksums, and that nothing logs a value."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from services.dlp.guard import DlpGuard, Screening
from services.dlp.language import detect_language
from services.dlp.medical import MedicalLexicon
from services.dlp.recognizers.checksums import iso7064_mod11_10, iso7064_mod97_10, luhn, mod11_weighted
from services.dlp.settings import DlpSettings

Screen = Callable[..., Screening]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("Können Sie mir bitte die Unterlagen bis Freitag schicken?", "de"),
        ("Could you please send me the documents by Friday?", "en"),
        ("Diagnosen: Hypertonie (I10), Niereninsuffizienz", "de"),  # no function word: default
        ("Größe und Gewicht", "de"),
        ("The meeting is in the Müller building.", "en"),
        ("", "de"),
    ],
    ids=["de-question", "en-question", "de-clinical-note", "de-umlauts", "en-with-umlaut", "empty"],
)
def test_language_detection(case: str, expected: str) -> None:
    assert detect_language(case, ["de", "en"], "de") == expected


@pytest.fixture(scope="module")
def lexicon() -> MedicalLexicon:
    return MedicalLexicon(DlpSettings().medical_dir, ["de", "en"])


def _categories(lexicon: MedicalLexicon, text: str, language: str) -> list[str]:
    return sorted(m.category for m in lexicon.scan(text, language).matches)


def test_medical_german_compounds(lexicon: MedicalLexicon) -> None:
    assert _categories(lexicon, "Verdacht auf Lungenkrebs und Typ-2-Diabetes", "de") == ["diagnosis", "diagnosis"]


def test_medical_english_phrases(lexicon: MedicalLexicon) -> None:
    text = "She has multiple sclerosis and had an MRI scan."
    assert _categories(lexicon, text, "en") == ["diagnosis", "procedure"]


def test_icd10_codes(lexicon: MedicalLexicon) -> None:
    assert _categories(lexicon, "Kodiert als F32.1 und E11.9", "de") == ["icd10", "icd10"]
    assert _categories(lexicon, "Diagnose: I10", "de") == ["icd10"]  # bare code with context
    # Bare codes without context are fuel grades and products; invalid categories never count.
    assert _categories(lexicon, "Super E10 kostet mehr, der C64 war ein Computer.", "de") == []
    assert _categories(lexicon, "Code W99.9 und Q99.9", "de") == ["icd10", "icd10"]
    assert _categories(lexicon, "Code U99.9", "de") == ["icd10"]


def test_atc_codes(lexicon: MedicalLexicon) -> None:
    assert _categories(lexicon, "Wirkstoff N06AB06 verordnet", "de") == ["atc"]
    assert _categories(lexicon, "Gruppe N06AB ohne Kontext", "de") == []
    assert _categories(lexicon, "ATC-Gruppe N06AB", "de") == ["atc"]


def test_ambiguous_words_are_not_medical(lexicon: MedicalLexicon) -> None:
    text = "Die Behandlung der Anfrage, die Operation im Lager und die Prognose für Q3 sind offen."
    assert _categories(lexicon, text, "de") == []
    assert _categories(lexicon, "The operation and the treatment of the data look fine.", "en") == []


def test_excluded_spans_do_not_count(lexicon: MedicalLexicon) -> None:
    text = "Frau Krebs hat angerufen."
    assert _categories(lexicon, text, "de") == ["diagnosis"]
    scan = lexicon.scan(text, "de", exclude=[(5, 10)])
    assert scan.matches == []


def test_name_that_is_a_medical_word_does_not_block(screen: Screen) -> None:
    screening = screen("Sehr geehrte Frau Krebs, anbei die Rechnung.")
    assert (screening.decision.action, screening.decision.has_medical_terms) == ("redact", False)


def test_checksums() -> None:
    assert luhn("4111 1111 1111 1111") and not luhn("4111 1111 1111 1112")
    # ISO 7064 MOD 97-10 with the check digits at the end (an IBAN rearranged)
    assert iso7064_mod97_10("370400440532013000DE89") and not iso7064_mod97_10("370400440532013001DE89")
    assert iso7064_mod11_10("20433218191") and not iso7064_mod11_10("20433218192")
    assert mod11_weighted("155942") and not mod11_weighted("155943")


def test_nothing_logs_a_value(guard: DlpGuard, caplog: pytest.LogCaptureFixture,
                              capsys: pytest.CaptureFixture[str]) -> None:
    values = ["jonas.weber@example.de", "Jonas Weber", "0171 2345678", "Depression"]
    caplog.set_level(logging.DEBUG)
    for direction in ("input", "output"):
        guard.screen([f"{values[1]} ({values[0]}, {values[2]}) hat eine {values[3]}."],
                     direction=direction, context=_context())
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err
    leaked = [i for i, v in enumerate(values) if v in logged]
    assert leaked == []


def _context():  # type: ignore[no-untyped-def]
    from tests.dlp.conftest import CONTEXT

    return CONTEXT
