"""The streaming window (issue 12): however an answer is chunked, the caller gets the text
``screen`` would produce for the whole answer, and never a detected value in clear."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.dlp.guard import DlpGuard, PolicyContext
from services.dlp.release_window import HOLD_BACK, ReleaseWindow

CONTEXT = PolicyContext(usecase_class="chat", tenant="t1", business_unit="bu", user_role="user")
ANSWERS = [
    "Bitte schreiben Sie an erika.mustermann@example.org wegen des Vorgangs, danke sehr.",
    "Überweisen Sie den Betrag auf DE89 3704 0044 0532 0130 00 bis Freitag, mit freundlichen Grüßen.",
    "Die IBAN lautet DE89370400440532013000 und der Verwendungszweck ist Schaden 4711.",
    "Ein Stellwerk stellt Weichen und Signale, damit Züge sicher fahren können. " * 3,
    "Please contact john.smith@example.com or call the office tomorrow, thank you.",
]
VALUES = ["erika.mustermann@example.org", "DE89 3704 0044 0532 0130 00", "DE89370400440532013000",
          "john.smith@example.com"]


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in pairwise(points)]


def stream(guard: DlpGuard, pieces: list[str]) -> str:
    window = ReleaseWindow(guard, CONTEXT)
    out = [window.feed(piece).text for piece in pieces]
    out.append(window.finish().text)
    return "".join(out)


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(index=st.integers(0, len(ANSWERS) - 1), cuts=st.lists(st.integers(0, 400), max_size=40))
def test_any_chunking_releases_exactly_the_screened_answer(guard: DlpGuard, index: int, cuts: list[int]) -> None:
    answer = ANSWERS[index]
    whole = guard.screen([answer], direction="output", context=CONTEXT)
    assert whole.texts is not None
    released = stream(guard, chunked(answer, cuts))
    assert released == whole.texts[0]


def test_one_character_chunks_never_release_a_value_in_clear(guard: DlpGuard) -> None:
    for answer in ANSWERS:
        window = ReleaseWindow(guard, CONTEXT)
        released = "".join(window.feed(c).text for c in answer) + window.finish().text
        leaked = [v for v in VALUES if v in released]
        assert leaked == []


def test_nothing_is_released_before_the_hold_back_is_full(guard: DlpGuard) -> None:
    window = ReleaseWindow(guard, CONTEXT)
    text = "Ein kurzer Satz ohne Daten. " * 2  # shorter than the hold-back
    assert len(text) < HOLD_BACK
    assert "".join(window.feed(c).text for c in text) == ""
    assert window.finish().text == text


def test_a_block_releases_nothing_after_the_decision(guard: DlpGuard) -> None:
    window = ReleaseWindow(guard, CONTEXT)
    answer = "Alles gut. " * 8 + "Erika Mustermann, erika.mustermann@example.org, hat Diabetes mellitus Typ 2 (E11.9). " * 2
    releases = [window.feed(c) for c in answer]
    final = window.finish()
    blocked_at = next(i for i, r in enumerate(releases) if r.blocked)
    assert all(r.text == "" for r in releases[blocked_at:]) and final.blocked and final.text == ""
    assert final.decision is not None and final.decision.action == "block"
    released = "".join(r.text for r in releases)
    assert "Diabetes" not in released and "mustermann" not in released


def test_pseudonyms_are_restored_in_released_text(guard: DlpGuard) -> None:
    window = ReleaseWindow(guard, CONTEXT, {"<EMAIL_ADDRESS_1>": "erika.mustermann@example.org"})
    answer = "Ich schreibe an <EMAIL_ADDRESS_1> wegen des Vorgangs und melde mich morgen wieder bei Ihnen."
    released = "".join(window.feed(c).text for c in answer) + window.finish().text
    assert "erika.mustermann@example.org" in released and "<EMAIL_ADDRESS_1>" not in released
