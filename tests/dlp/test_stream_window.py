"""The streaming window (issue 12), ``services/dlp/stream_window.py``.

However an answer is chunked — down to one character per event — the released pieces add up
to exactly what screening the whole answer at once yields, the final decision is the whole
answer's, and no detected value (nor any piece of it) is ever released in clear. Assertions
on released text compute booleans first, so a failure never prints a value (conftest).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import DlpDecision
from services.dlp.guard import DlpGuard, Finding, PolicyContext
from services.dlp.stream_window import (
    DECLARED_EXTENTS,
    Release,
    StreamScreen,
    Tally,
    WindowScan,
    _earliest_partial,
    _Partial,
    _whitespace_width,
    growth_for,
    hold_back_for,
    recognizer_extents,
)

CONTEXT = PolicyContext(usecase_class="chat", tenant="t1", business_unit="bu", user_role="user")

# (answer, values that must never be released in clear)
CORPUS: list[tuple[str, list[str]]] = [
    ("Bitte schreiben Sie an jonas.weber@example.de wegen des Vorgangs, danke sehr. "
     "Ich melde mich morgen wieder bei Ihnen.", ["jonas.weber@example.de"]),
    ("Überweisen Sie den Betrag auf DE89 3704 0044 0532 0130 00 bis Freitag, mit freundlichen "
     "Grüßen aus der Buchhaltung.", ["DE89 3704 0044 0532 0130 00"]),
    ("Die IBAN lautet DE89370400440532013000 und der Verwendungszweck ist Schaden 4711, bitte "
     "geben Sie ihn immer an.", ["DE89370400440532013000"]),
    ("Ihre Ansprechpartnerin ist Frau Anna Maria Schulz aus dem Vertrieb, erreichbar unter "
     "+49 30 1234567 oder 0171 2345678.", ["Anna Maria Schulz", "+49 30 1234567", "0171 2345678"]),
    ("Please contact john.smith@example.com or call (212) 555-0147 tomorrow; Mr. Robert Miller "
     "will answer your questions.", ["john.smith@example.com", "(212) 555-0147", "Robert Miller"]),
    ("Ein Stellwerk stellt Weichen und Signale, damit Züge sicher fahren können. " * 3, []),
    ("Kurz: Herr Jonas Weber, jonas.weber@example.de, IBAN DE89 3704 0044 0532 0130 00, "
     "Telefon 030 1234567. Das wäre alles.",
     ["Jonas Weber", "jonas.weber@example.de", "DE89 3704 0044 0532 0130 00", "030 1234567"]),
]
VALUES = sorted({v for _, values in CORPUS for v in values})


def chunked(text: str, cuts: Sequence[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in pairwise(points)]


def run(window: StreamScreen, pieces: Sequence[str]) -> tuple[list[Release], Release]:
    releases = [window.feed(piece) for piece in pieces]
    return releases, window.finish()


def released_text(releases: Sequence[Release], final: Release) -> str:
    return "".join(r.text for r in releases) + final.text


def fragments(value: str) -> list[str]:
    """The parts of a value a partial release could show: each run of 4+ non-space chars."""
    return [part for part in value.replace("(", " ").replace(")", " ").split() if len(part) >= 4]


def leaks(text: str) -> int:
    return sum(1 for value in VALUES for part in fragments(value) if part in text)


# -- the real guard: any chunking ----------------------------------------------------------


@settings(max_examples=45, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    index=st.integers(0, len(CORPUS) - 1),
    cuts=st.lists(st.integers(0, 400), max_size=60),
    screen_every=st.sampled_from([1, 8, 64]),
)
def test_any_chunking_releases_exactly_the_screened_answer(
    guard: DlpGuard, index: int, cuts: list[int], screen_every: int
) -> None:
    answer, _ = CORPUS[index]
    whole = guard.screen([answer], direction="output", context=CONTEXT)
    assert whole.texts is not None
    window = StreamScreen.for_guard(guard, CONTEXT, screen_every=screen_every)
    releases, final = run(window, chunked(answer, cuts))
    same = released_text(releases, final) == whole.texts[0]
    assert same
    assert final.decision is not None and not final.blocked
    assert (final.decision.action, final.decision.rule_id) == (whole.decision.action, whole.decision.rule_id)
    assert final.decision.entities == whole.decision.entities
    assert final.decision.has_pii == whole.decision.has_pii


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_one_character_events_never_release_a_value_or_a_piece_of_one(guard: DlpGuard, index: int) -> None:
    answer, values = CORPUS[index]
    window = StreamScreen.for_guard(guard, CONTEXT, screen_every=1)
    releases, final = run(window, list(answer))
    out = released_text(releases, final)
    assert leaks(out) == 0
    # and no single event showed one either (each is checked on its own and as a prefix)
    prefix = ""
    for release in releases:
        prefix += release.text
        assert leaks(prefix) == 0
    if values:
        assert final.decision is not None and final.decision.action == "redact"


def test_values_in_clear_in_the_answer_are_found_by_the_check(guard: DlpGuard) -> None:
    # The leak check above must be able to fail: the raw answers do contain the values.
    assert all(leaks(answer) > 0 for answer, values in CORPUS if values)


def test_fixed_hold_back_releases_nothing_while_it_is_not_full(guard: DlpGuard) -> None:
    hold_back = hold_back_for(guard)
    text = "Ein kurzer Satz ohne Daten. " * 3
    assert len(text) < hold_back
    window = StreamScreen.for_guard(guard, CONTEXT, screen_every=1, growth=False)
    releases, final = run(window, list(text))
    assert all(r.text == "" for r in releases)
    assert final.text == text
    assert window.screenings == 1  # skipped while nothing could be released


def test_clean_text_is_released_at_the_first_safe_boundary(guard: DlpGuard) -> None:
    text = "Hallo, gern helfe ich Ihnen weiter. " * 3
    window = StreamScreen.for_guard(guard, CONTEXT, screen_every=128)
    out, first_at = "", None
    for received, ch in enumerate(text, 1):
        piece = window.feed(ch).text
        if piece and first_at is None:
            first_at = received
        out += piece
    out += window.finish().text
    assert out == text
    assert first_at == len("Hallo, ")  # "Hallo, " goes out at once: no value can start there
    assert window.screenings <= len(text) // 128 + 6  # the ramp: a few early screenings


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("Hallo, ", ""),
        ("Die IBAN lautet DE89 3704 ", "DE89 3704 "),  # a grouped IBAN still growing
        ("Die Antwort lautet: DE89 ", "DE89 "),
        ("Ihre Ansprechpartnerin ist Frau Anna ", "Frau Anna "),  # a name may go on
        ("Ich melde mich bei anna ", "anna "),  # a known name in lower case
        ("Schreiben Sie an erika (at) ", "erika (at) "),  # an address spelled out
        ("Rufen Sie an unter 030 123 ", "030 123 "),
        ("Please call (212) 555-", "(212) 555-"),
        ("Geboren am 12. ", "12. "),  # "12. März 2024"
        ("Jonas Weber. Danke ", "Danke "),  # no name runs across a sentence end
        ("Die Nummer ist 12 345 67O ", "12 345 67O "),  # OCR: the O may be a 0 between digits
    ],
)
def test_the_growth_model_holds_back_what_may_still_grow(guard: DlpGuard, text: str, held: str) -> None:
    hold = growth_for(guard).hold_from(text, 0)
    cut = hold
    while cut > 0 and not text[cut - 1].isspace():
        cut -= 1
    assert text[cut:] == held


def test_partial_search_finds_the_earliest_start_a_per_position_scan_finds() -> None:
    import random

    import regex

    patterns = [r"\d{3}(?: \d{2,4})+", r"(?<!\w)[A-Z]{2} ?\d{2}(?: ?\d{4}){2}", r"\d{5}(?= [A-Z])", r"ab\b"]
    rng = random.Random(7)
    for _ in range(400):
        text = "".join(rng.choice("0123 ABab\n") for _ in range(rng.randint(0, 24)))
        for pattern in patterns:
            partial = _Partial(regex.compile(pattern), reach=len(text) + 1)
            scan = next(
                (p for p in range(len(text)) if partial.regex.fullmatch(text, p, partial=True) is not None),
                len(text),
            )
            assert _earliest_partial(partial, text, 0, len(text)) == scan


def test_a_block_mid_stream_releases_nothing_after_the_decision(guard: DlpGuard) -> None:
    answer = (
        "Vielen Dank für Ihre Nachricht, wir haben den Vorgang geprüft und melden uns. " * 3
        + "Herr Jonas Weber, jonas.weber@example.de, hat Diabetes mellitus Typ 2 (E11.9) und "
        "bekommt Metformin. " * 2
        + "Mit freundlichen Grüßen, Ihr Team. " * 4
    )
    whole = guard.screen([answer], direction="output", context=CONTEXT)
    assert whole.decision.action == "block"
    window = StreamScreen.for_guard(guard, CONTEXT, screen_every=8)
    releases, final = run(window, list(answer))
    blocked_at = next(i for i, r in enumerate(releases) if r.blocked)
    before = "".join(r.text for r in releases[:blocked_at])
    assert before  # the harmless start went out before the decision
    assert all(r.text == "" and r.blocked for r in releases[blocked_at:])
    assert final.blocked and final.text == ""
    assert final.decision is not None
    assert (final.decision.action, final.decision.rule_id) == ("block", whole.decision.rule_id)
    assert all(r.decision == final.decision for r in releases[blocked_at:])
    shown = ("Diabetes" in before, "Metformin" in before, leaks(before) > 0)
    assert shown == (False, False, False)
    # what went out is the start of the answer, values in it redacted (the growth model may
    # release the name and the address, redacted, before the medical terms arrive)
    position = 0
    for segment in re.split(r"<[A-Z_]+>", before):
        found = answer.find(segment, position)
        assert found >= position
        position = found + len(segment)
    with pytest.raises(RuntimeError):
        window.feed("more")


def test_pseudonyms_are_restored_across_chunk_boundaries(guard: DlpGuard) -> None:
    pseudonyms = {"<EMAIL_ADDRESS_1>": "jonas.weber@example.de", "<PERSON_1>": "Jonas Weber"}
    answer = ("Ich schreibe <PERSON_1> an <EMAIL_ADDRESS_1> wegen des Vorgangs und melde mich morgen "
              "wieder bei Ihnen, sobald ich etwas weiß.")
    whole = guard.screen([answer], direction="output", context=CONTEXT)
    assert whole.texts is not None
    for size in (1, 3, 7):
        window = StreamScreen.for_guard(guard, CONTEXT, pseudonyms, screen_every=size)
        releases, final = run(window, [answer[i:i + size] for i in range(0, len(answer), size)])
        out = released_text(releases, final)
        restored = ("jonas.weber@example.de" in out, "Jonas Weber" in out, "<EMAIL_ADDRESS_1>" in out)
        assert restored == (True, True, False)
        assert final.decision is not None and final.decision.action == whole.decision.action


def test_pseudonym_next_to_medical_terms_blocks_as_the_whole_answer_does(guard: DlpGuard) -> None:
    answer = ("Zusammenfassung für die Akte, bitte prüfen Sie die Angaben sorgfältig und vollständig. "
              "<PERSON_1> leidet an Diabetes mellitus Typ 2 und nimmt Metformin. Ende.")
    whole = guard.screen([answer], direction="output", context=CONTEXT)
    window = StreamScreen.for_guard(guard, CONTEXT, {"<PERSON_1>": "Jonas Weber"}, screen_every=4)
    releases, final = run(window, list(answer))
    assert final.blocked and whole.decision.action == "block"
    assert final.decision is not None and final.decision.rule_id == whole.decision.rule_id
    assert "Jonas" not in released_text(releases, final)


def test_screening_cost_stays_bounded_for_one_character_events(guard: DlpGuard) -> None:
    answer = " ".join(a for a, _ in CORPUS) * 3  # ~2,000 characters
    window = StreamScreen.for_guard(guard, CONTEXT, screen_every=64)
    run(window, list(answer))
    assert window.screenings <= len(answer) // 64 + 6  # + the ramp (first screenings early)
    # each character is screened about (context + hold-back + every) / every times, not once per event
    assert window.screened_chars <= 5 * len(answer)


def test_release_repr_shows_no_text() -> None:
    assert "secret-value" not in repr(Release("secret-value"))


# -- the hold-back ------------------------------------------------------------------------


def test_hold_back_covers_every_value_with_whitespace_the_recognizers_can_match(guard: DlpGuard) -> None:
    hold_back = hold_back_for(guard)
    extents = recognizer_extents(guard)
    bounded = [e.chars for e in extents if e.chars is not None]
    assert hold_back >= max(bounded)
    by_entity = {e.entity: e for e in extents}
    assert by_entity["IBAN_CODE"].chars is not None and by_entity["IBAN_CODE"].chars >= 42  # 34 + 8 spaces
    assert by_entity["PHONE_NUMBER"].chars is not None and by_entity["PHONE_NUMBER"].chars >= 20
    assert set(DECLARED_EXTENTS) <= set(by_entity)
    # values without whitespace (plain e-mail addresses, compact IBANs) need no hold-back
    assert _whitespace_width(r"[\w.+-]+@[\w-]+\.[a-z]{2,}") == 0
    assert _whitespace_width(r"[A-Z]{2}\d{2}(?: ?\d{4}){4}") == 24
    assert _whitespace_width(r"\d+(?:\s\d+)*") is None


# -- the cut rule, with a screener that finds nothing -------------------------------------


class NothingFound:
    def scan(self, text: str) -> WindowScan:
        return WindowScan([], [], "de")

    def decide(self, tally: Tally) -> DlpDecision:
        return DlpDecision(direction="output", action="allow", rule_id="test.allow", policy_version="v",
                           language="de", derived_sensitivity="public", has_pii=False,
                           has_medical_terms=False)

    def redact(self, text: str, findings: Sequence[Finding]) -> str:
        return text


@settings(max_examples=120, derandomize=True, deadline=None)
@given(
    text=st.text(alphabet="ab@. \n", max_size=200),
    cuts=st.lists(st.integers(0, 250), max_size=50),
    hold_back=st.integers(0, 20),
)
def test_cuts_only_after_whitespace_and_behind_the_hold_back(text: str, cuts: list[int], hold_back: int) -> None:
    window = StreamScreen(NothingFound(), hold_back=hold_back, context_chars=8, screen_every=1)
    received = released = 0
    for piece in chunked(text, cuts):
        received += len(piece)
        out = window.feed(piece).text
        assert text[released:released + len(out)] == out
        released += len(out)
        if out:
            assert text[released - 1].isspace()  # never inside a run of non-space characters
            assert received - released >= hold_back  # without a growth model: the fixed hold-back
    final = window.finish().text
    assert text[:released] + final == text
