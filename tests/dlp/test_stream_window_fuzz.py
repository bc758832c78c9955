"""Property test of the streaming window's early release (issue 12), seeded and fast.

Random answers made of German and English filler sentences and values — e-mail addresses,
IBANs with and without spaces, phone numbers, German and English names, customer IDs, card
numbers, e-mail addresses spelled out — are split at random points (often down to one
character per event) and streamed through ``StreamScreen`` with the real guard. Whatever the
split and the cadence:

* the released text equals the redacted text of screening the whole answer at once, and
* no prefix of 3 or more characters of any value the whole screening redacts is ever
  released — not after any event, not at the end (the caller never sees part of a value).

Assertions compute booleans first, so a failure never prints a value (conftest).
"""

from __future__ import annotations

import random

from services.dlp.guard import DlpGuard, PolicyContext
from services.dlp.stream_window import StreamScreen

CONTEXT = PolicyContext(usecase_class="chat", tenant="t1", business_unit="bu", user_role="user")

FILLERS = [
    "Vielen Dank für Ihre Nachricht.",
    "Wir haben den Vorgang geprüft und melden uns bald.",
    "Bitte schreiben Sie an",
    "Die Überweisung geht auf das Konto",
    "Ihre Ansprechpartnerin ist",
    "Rufen Sie gern an unter",
    "Thanks for your patience, we will get back to you.",
    "Please contact",
    "The payment goes to the account",
    "or call",
    "Kundennummer",
    "Kreditkarte",
    "Mit freundlichen Grüßen, Ihr Team.",
    "Hallo, hier ist die Zusammenfassung:",
    "Sehr geehrte",
]
VALUES = [
    "jonas.weber@example.de",
    "mia.schmidt@beispiel.org",
    "john.smith@example.com",
    "erika (at) example (punkt) org",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "GB29 NWBK 6016 1331 9268 19",
    "+49 30 1234567",
    "0171 2345678",
    "(212) 555-0147",
    "Frau Anna Maria Schulz",
    "Herr Jonas Weber",
    "Mr. Robert Miller",
    "Frau Dr. Sabine Keller",
    "anna schulz",
    "KD-12345674",
    "4111 1111 1111 1111",
]


def answer(rng: random.Random) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(3, 7)):
        parts.append(rng.choice(FILLERS))
        if rng.random() < 0.7:
            parts.append(rng.choice(VALUES) + rng.choice([",", ".", "", " und", " or"]))
    return " ".join(parts) + rng.choice(["", " ", "\n", " Ende."])


def split(rng: random.Random, text: str) -> list[str]:
    if rng.random() < 0.5:
        return list(text)  # one character per event
    pieces, i = [], 0
    while i < len(text):
        size = rng.choice([1, 1, 2, 3, 5, 8, 13])
        pieces.append(text[i:i + size])
        i += size
    return pieces


def test_random_splits_release_the_whole_answers_redaction_and_never_part_of_a_value(
    guard: DlpGuard,
) -> None:
    rng = random.Random(1212)
    cases = redacted_values = 0
    for _ in range(36):
        text = answer(rng)
        whole = guard.screen([text], direction="output", context=CONTEXT)
        if whole.texts is None:
            continue  # blocked as a whole (not the subject here)
        expected = whole.texts[0]
        values = {text[f.start:f.end] for f in whole.findings} if whole.decision.action == "redact" else set()
        prefixes = {v[:k] for v in values for k in range(3, len(v) + 1)} - _substrings_of(expected, values)
        window = StreamScreen.for_guard(guard, CONTEXT, screen_every=rng.choice([1, 8, 64, 128]))
        out = ""
        leaked = False
        for piece in split(rng, text):
            release = window.feed(piece)
            out += release.text
            leaked = leaked or any(p in out for p in prefixes)
        final = window.finish()
        out += final.text
        leaked = leaked or any(p in out for p in prefixes)
        same = out == expected
        assert (same, leaked, final.blocked) == (True, False, False)
        cases += 1
        redacted_values += len(values)
    assert cases >= 30 and redacted_values >= 60  # the generator does exercise values


def _substrings_of(expected: str, values: set[str]) -> set[str]:
    """Prefixes that the redacted whole answer shows anyway (a filler word that happens to
    start like a value): not a leak."""
    return {v[:k] for v in values for k in range(3, len(v) + 1) if v[:k] in expected}


def test_the_check_can_fail() -> None:
    # releasing "jonas." is a leak by the test's rule
    value = "jonas.weber@example.de"
    prefixes = {value[:k] for k in range(3, len(value) + 1)}
    assert any(p in "Bitte schreiben Sie an jonas." for p in prefixes)
