"""DATE_TIME, a weak (quasi-identifying) signal: numeric dates plus written German and
English dates, which Presidio's DateRecognizer lacks ("3. März 2024", "January 7, 2026").

Both languages' month names are matched in every text: language detection can err on a
short clinical note, and a birth date must not be lost because of it. A version number
("Version 3.1.40") is not a date.
"""

from __future__ import annotations

import re
from typing import Final

from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import DateRecognizer

_MONTHS_DE: Final = (
    r"(?:Januar|Jänner|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November"
    r"|Dezember|Jan\.|Feb\.|Mär\.|Apr\.|Jun\.|Jul\.|Aug\.|Sep\.|Sept\.|Okt\.|Nov\.|Dez\.)"
)
_MONTHS_EN: Final = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sep\.?|Sept\.?|Oct\.?|Nov\.?|Dec\.?)"
)
_DAY: Final = r"(?:0?[1-9]|[12]\d|3[01])"

WRITTEN_DATE_PATTERNS: Final = [
    Pattern("de day month [year]", rf"\b{_DAY}\.\s?{_MONTHS_DE}(?:\s\d{{4}})?\b", 0.6),
    Pattern("de month year", rf"\b{_MONTHS_DE}\s\d{{4}}\b", 0.5),
    Pattern("en month day, year", rf"\b{_MONTHS_EN}\s{_DAY}(?:st|nd|rd|th)?,?\s\d{{4}}\b", 0.6),
    Pattern("en day month year", rf"\b{_DAY}(?:st|nd|rd|th)?\s{_MONTHS_EN}\s\d{{4}}\b", 0.6),
]
CONTEXT: Final = [
    "datum", "geboren", "geb", "geburtsdatum", "termin", "seit", "date", "born", "birth", "dob",
    "since", "due", "fällig",
]
_VERSION_BEFORE: Final = re.compile(r"(?i)(?:version|ver\.|release|build|v)\s*$")


class DateTimeRecognizer(PatternRecognizer):
    def __init__(self, supported_language: str) -> None:
        super().__init__(
            supported_entity="DATE_TIME",
            name="StellwerkDateTimeRecognizer",
            supported_language=supported_language,
            patterns=[*DateRecognizer.PATTERNS, *WRITTEN_DATE_PATTERNS],
            context=CONTEXT,
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return [r for r in results if not _VERSION_BEFORE.search(text, max(0, r.start - 12), r.start)]
