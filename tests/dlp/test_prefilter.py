"""The Hyperscan prefilter skips recognizers, never findings (services/dlp/prefilter.py).

The proof is differential: the same guard with and without the prefilter screens a
generated corpus (every entity family of bench/dlp.py, their spelling variants, the hard
cases, and texts mutated with Unicode look-alikes) and must produce identical findings,
decisions and texts. Tests assert on types and offsets only, never print a value.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
import regex
from presidio_analyzer import Pattern, PatternRecognizer

from bench.dlp import FAMILIES, CorpusGenerator, VariantGenerator, hard_corpus
from services.dlp.guard import DlpGuard
from services.dlp.prefilter import PatternPrefilter, PrefilteredRegistry
from services.dlp.settings import DlpSettings
from tests.dlp.conftest import CONTEXT

# Characters that trip naive ASCII matching: umlauts, sharp s, fullwidth and Arabic-Indic
# digits, non-breaking and thin spaces, a Kelvin sign, a dotless i, Greek final sigma, a
# combining accent and Hanifi Rohingya digits (newer than Hyperscan's Unicode tables).
_LOOKALIKES = "äöüÄÖÜßẞ０１９٣٤\u00a0\u2009\u212aıς@.-/\u0301\U00010d33\U00010d35"


def _ready(guard: DlpGuard, timeout_s: float = 180.0) -> DlpGuard:
    deadline = time.monotonic() + timeout_s
    while not guard.prefilter_ready:
        assert time.monotonic() < deadline, "the prefilter automaton was not built in time"
        time.sleep(0.2)
    return guard


@pytest.fixture(scope="module")
def unfiltered() -> DlpGuard:
    return DlpGuard.from_settings(DlpSettings(prefilter=False))


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> DlpGuard:
    # Its own cache directory: the automaton is built here, not loaded from an earlier run.
    return _ready(DlpGuard.from_settings(DlpSettings(prefilter_cache_dir=tmp_path_factory.mktemp("hs"))))


def _corpus(seed: int) -> list[str]:
    texts = [s.text for s in CorpusGenerator(seed).corpus(240)]
    variants = VariantGenerator(seed)
    for family in FAMILIES:
        texts += [s.text for s in variants.family_corpus(family, 12)]
    texts += [s.text for samples in hard_corpus().values() for s in samples]
    rng = random.Random(seed)
    mutated = []
    for text in texts[:200]:
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(_LOOKALIKES))
        mutated.append("".join(chars))
    return texts + mutated


def _outcome(guard: DlpGuard, text: str) -> tuple[object, ...]:
    screening = guard.screen([text], direction="input", context=CONTEXT)
    findings = tuple((f.type, f.start, f.end, f.score) for f in screening.findings)
    return findings, screening.decision.action, screening.decision.rule_id, screening.texts == [text]


def test_findings_are_identical_with_and_without_the_prefilter(filtered: DlpGuard, unfiltered: DlpGuard) -> None:
    texts = _corpus(seed=11)
    differing = [i for i, text in enumerate(texts) if _outcome(filtered, text) != _outcome(unfiltered, text)]
    assert differing == []
    # The corpus exercises what it should: most texts hold findings, and some have none.
    with_findings = sum(bool(_outcome(unfiltered, t)[0]) for t in texts)
    assert len(texts) * 0.5 < with_findings < len(texts)


def test_a_benign_text_skips_most_pattern_recognizers_and_an_identifier_keeps_its_own(filtered: DlpGuard) -> None:
    prefilter = filtered.prefilter_for("en")
    assert prefilter is not None and prefilter.gated >= 15
    benign = "The review of the request is complete and the assessment follows the usual guidelines."
    assert len(prefilter.excluded(benign)) == prefilter.gated  # nothing there can match
    with_email = benign + " Write to someone at example dot org: jane.roe@example.org"
    skipped_names = {r.name for r in _recognizers(filtered, "en") if id(r) in prefilter.excluded(with_email)}
    assert "EmailRecognizer" not in skipped_names
    assert len(prefilter.excluded(with_email)) < prefilter.gated


def _recognizers(guard: DlpGuard, language: str) -> list[PatternRecognizer]:
    prefilter = guard.prefilter_for(language)
    assert prefilter is not None
    return list(prefilter._gated)


def test_patterns_hyperscan_may_read_differently_keep_their_recognizer_always_on(tmp_path: Path) -> None:
    fuzzy = PatternRecognizer(supported_entity="X", name="fuzzy",
                              patterns=[Pattern("fuzzy", r"(?:secret){e<=1}", 0.5)])
    plain = PatternRecognizer(supported_entity="Y", name="plain", patterns=[Pattern("p", r"\bplain\b", 0.5)])
    prefilter = PatternPrefilter([fuzzy, plain], tmp_path, background=False)
    assert prefilter.gated == 1
    assert prefilter.excluded("nothing to see") == frozenset({id(plain)})  # the fuzzy one runs


def test_a_character_whose_class_hyperscan_reads_differently_runs_every_recognizer(tmp_path: Path) -> None:
    four_digits = PatternRecognizer(supported_entity="Y", name="digits", patterns=[Pattern("p", r"\d{4}", 0.5)])
    prefilter = PatternPrefilter([four_digits], tmp_path, background=False)
    assert prefilter.excluded("no number here") == frozenset({id(four_digits)})
    # Hanifi Rohingya digits: ``\d`` to Python's ``regex``, not to Hyperscan's older tables —
    # the automaton finds nothing, so without the check the recognizer would be skipped.
    rohingya = "".join(chr(0x10D30 + d) for d in (2, 0, 2, 6))
    assert regex.search(r"\d{4}", rohingya) is not None
    assert prefilter.excluded(f"year {rohingya}") == frozenset()
    assert prefilter.excluded("Grüße, ünd ä") == frozenset({id(four_digits)})  # umlauts agree
    assert prefilter.excluded("a lone surrogate \ud800 here") == frozenset()  # cannot encode: all run


def test_the_automaton_is_cached_and_a_broken_cache_file_is_rebuilt(tmp_path: Path) -> None:
    recognizer = PatternRecognizer(supported_entity="Y", name="plain", patterns=[Pattern("p", r"\d{4}", 0.5)])
    first = PatternPrefilter([recognizer], tmp_path, background=False)
    cached = tmp_path / f"{first.key}.hsdb"
    assert cached.is_file()
    assert PatternPrefilter([recognizer], tmp_path, background=True).ready  # loaded, no build
    stale = tmp_path / "0123abcd.hsdb"  # another pattern set's automaton, unused for 40 days
    stale.write_bytes(b"old")
    os.utime(stale, (time.time() - 40 * 86400,) * 2)
    cached.write_bytes(b"not an automaton")
    rebuilt = PatternPrefilter([recognizer], tmp_path, background=False)
    assert rebuilt.ready and rebuilt.excluded("no digits") == frozenset({id(recognizer)})
    assert rebuilt.excluded("year 2026") == frozenset()
    assert not stale.exists() and cached.is_file()  # written anew, the stale one cleaned up


def test_until_the_automaton_is_ready_every_recognizer_runs(tmp_path: Path) -> None:
    recognizer = PatternRecognizer(supported_entity="Y", name="plain", patterns=[Pattern("p", r"\d{4}", 0.5)])
    prefilter = PatternPrefilter([recognizer], None, background=True)
    if not prefilter.ready:  # building: nothing is skipped
        assert prefilter.excluded("no digits") == frozenset()
    registry = PrefilteredRegistry(supported_languages=["en"])
    registry.add_recognizer(recognizer)
    with prefilter.skipping("2026"):
        assert registry.get_recognizers(language="en", all_fields=True) == [recognizer]
