"""Redaction operators, reversible pseudonymisation and its round trip."""

from __future__ import annotations

from collections.abc import Callable

from services.dlp.guard import Screening, restore_pseudonyms
from services.dlp.redaction import PSEUDONYM

Screen = Callable[..., Screening]


def _no_value_in(texts: list[str] | None, values: list[str]) -> bool:
    return texts is not None and not any(v in t for v in values for t in texts)


def test_typed_placeholders(screen: Screen) -> None:
    values = ["jonas.weber@example.de", "030 12345678"]
    screening = screen(f"Mail {values[0]}, Tel. {values[1]}")
    assert screening.decision.action == "redact"
    assert screening.texts == ["Mail <EMAIL_ADDRESS>, Tel. <PHONE_NUMBER>"]
    assert _no_value_in(screening.texts, values)
    assert screening.decision.pseudonymized is False
    assert screening.pseudonyms == {}


def test_mask_operator_for_cards(screen: Screen) -> None:
    screening = screen("Karte 4111111111111111 bitte belasten.")
    assert screening.texts == ["Karte ************1111 bitte belasten."]


def test_keep_operator_for_dates(screen: Screen) -> None:
    text = "Am 12.03.2025 schreibt jonas.weber@example.de."
    screening = screen(text)
    assert screening.texts == ["Am 12.03.2025 schreibt <EMAIL_ADDRESS>."]


def test_redaction_applies_to_every_text(screen: Screen) -> None:
    screening = screen("Hallo, hier ist Jonas Weber.", "Meine Nummer: 0171 2345678", "Danke!")
    assert screening.texts == ["Hallo, hier ist <PERSON>.", "Meine Nummer: <PHONE_NUMBER>", "Danke!"]
    assert [f.text_index for f in screening.findings] == [0, 1]


def test_pseudonyms_are_consistent_across_texts(screen: Screen) -> None:
    texts = [
        "Jonas Weber und Anna Schulz treffen sich.",
        "Bitte Jonas Weber an jonas.weber@example.de erinnern.",
    ]
    screening = screen(*texts, pseudonymize=True)
    assert screening.decision.action == "redact"
    assert screening.decision.pseudonymized is True
    assert screening.texts == [
        "<PERSON_1> und <PERSON_2> treffen sich.",
        "Bitte <PERSON_1> an <EMAIL_ADDRESS_1> erinnern.",
    ]
    assert sorted(screening.pseudonyms) == ["<EMAIL_ADDRESS_1>", "<PERSON_1>", "<PERSON_2>"]


def test_pseudonym_round_trip(screen: Screen) -> None:
    original = "Schreibe Jonas Weber (jonas.weber@example.de) eine Einladung."
    screening = screen(original, pseudonymize=True)
    assert screening.texts is not None
    restored = restore_pseudonyms(screening.texts[0], screening.pseudonyms)
    round_trip_ok = restored == original
    assert round_trip_ok


def test_restore_in_a_model_answer(screen: Screen) -> None:
    screening = screen("Lade Jonas Weber zum Workshop ein.", pseudonymize=True)
    answer = "Liebe Grüße an <PERSON_1>; <PERSON_9> kenne ich nicht. Gruß, <PERSON>"
    restored = restore_pseudonyms(answer, screening.pseudonyms)
    # Known placeholders come back, unknown ones and plain type placeholders stay.
    assert PSEUDONYM.findall(restored) == [("PERSON", "9")]
    assert restored.endswith("Gruß, <PERSON>")
    assert "<PERSON_1>" not in restored


def test_allow_is_not_pseudonymised(screen: Screen) -> None:
    screening = screen("Wie spät ist es in Tokio?", pseudonymize=True)
    assert screening.decision.action == "allow"
    assert screening.pseudonyms == {}
    assert screening.decision.pseudonymized is False


def test_restore_without_mapping_is_identity() -> None:
    assert restore_pseudonyms("<PERSON_1> kommt.", {}) == "<PERSON_1> kommt."


def test_screening_repr_hides_content(screen: Screen) -> None:
    screening = screen("Mail jonas.weber@example.de", pseudonymize=True)
    leaked = "jonas.weber" in repr(screening)
    assert leaked is False
