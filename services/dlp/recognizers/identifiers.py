"""Identifiers with a validation rule, matched separator-, case- and OCR-insensitively.

Declared as data in ``data/identifiers.yaml`` (entity, patterns, validator, lengths, context,
pack). People write ``20 433 218 191``, ``de89370400440532013000``, ``4111.1111.1111.1111``
or ``A 838 637 942``; Presidio's recognizers expect the canonical form. Here a pattern
allows separators between the characters, the match is compacted (separators removed,
upper-cased) and validated — by Presidio's own checksum code where Presidio has a
recognizer for the entity — and only a valid value is reported, on the original span.

Variable-length identifiers (IBAN, cards) may run into a following word or number
("… 0130 00 bitte"); the compacted value is tried at the declared lengths, longest first,
and the span ends after the last character of the length that validates.

OCR: with ``ocr: true`` the patterns also run over a view of the text in which ``O``/``o``
between digits reads ``0`` and ``l``/``I``/``|`` reads ``1`` (same length, same offsets).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal

import msgspec
import yaml
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    DeHealthInsuranceRecognizer,
    DeSocialSecurityRecognizer,
    DeTaxIdRecognizer,
    IbanRecognizer,
)

from services.dlp.recognizers.checksums import luhn

Verdict = Literal["valid", "specimen", "invalid"]


class IdentifierPatternSpec(msgspec.Struct, forbid_unknown_fields=True):
    regex: str
    score: float
    name: str = ""


class IdentifierSpec(msgspec.Struct, forbid_unknown_fields=True):
    entity: str
    validator: str
    lengths: list[int]
    patterns: list[IdentifierPatternSpec]
    context: list[str] = msgspec.field(default_factory=list)
    pack: str | None = None
    ocr: bool = False
    specimen_score: float | None = None
    languages: list[str] = msgspec.field(default_factory=lambda: ["de", "en"])


class IdentifierFile(msgspec.Struct, forbid_unknown_fields=True):
    separator: str
    before: str
    after: str
    identifiers: list[IdentifierSpec]


# -- validators (on the compacted, upper-cased value) ---------------------------------------

def _presidio(recognizer: PatternRecognizer) -> Callable[[str], Verdict]:
    # Presidio's validate_result: True valid, None plausible, False invalid. Only a passed
    # check counts; "plausible" is not enough for a value whose writing was unusual.
    def check(value: str) -> Verdict:
        return "valid" if recognizer.validate_result(value) is True else "invalid"

    return check


_CARD_LENGTHS: Final = (
    (("34", "37"), (15,)),
    (("4",), (13, 16, 19)),
    (("5", "2"), (16,)),
    (("6",), (16, 17, 18, 19)),
    (("30", "36", "38", "39"), (14, 16)),
    (("35",), (16, 17, 18, 19)),
)


def _credit_card(value: str) -> Verdict:
    if not value.isdigit():
        return "invalid"
    if value.startswith("2") and not 2221 <= int(value[:4]) <= 2720:
        return "invalid"
    for prefixes, lengths in _CARD_LENGTHS:
        if value.startswith(prefixes):
            return "valid" if len(value) in lengths and luhn(value) else "invalid"
    return "invalid"


# Published examples and never-issued ranges: shaped like an SSN, used as test specimens.
_SSN_SPECIMENS: Final = frozenset({"123456789", "078051120", "219099999", "987654320"})


def _us_ssn(value: str) -> Verdict:
    if len(value) != 9 or not value.isdigit() or len(set(value)) == 1:
        return "invalid"
    area, group, serial = value[:3], value[3:5], value[5:]
    if value in _SSN_SPECIMENS or area in ("000", "666") or area.startswith("9") \
            or group == "00" or serial == "0000":
        return "specimen"
    return "valid"


def _us_itin(value: str) -> Verdict:
    if len(value) != 9 or not value.isdigit() or value[0] != "9":
        return "invalid"
    group = int(value[3:5])
    ok = 50 <= group <= 65 or 70 <= group <= 88 or 90 <= group <= 92 or 94 <= group <= 99
    return "valid" if ok else "invalid"


_NINO_BAD_PREFIX: Final = frozenset({"BG", "GB", "NK", "KN", "NT", "TN", "ZZ"})


def _uk_nino(value: str) -> Verdict:
    if not re.fullmatch(r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]", value):
        return "invalid"
    if value[:2] in _NINO_BAD_PREFIX:
        return "invalid"
    return "specimen" if value[:2] == "QQ" else "valid"


def _shape(value: str) -> Verdict:
    return "valid" if len(set(value)) > 1 else "invalid"


VALIDATORS: Final[dict[str, Callable[[str], Verdict]]] = {
    "de_tax_id": _presidio(DeTaxIdRecognizer()),
    "de_health_insurance": _presidio(DeHealthInsuranceRecognizer()),
    "de_social_security": _presidio(DeSocialSecurityRecognizer()),
    "iban": _presidio(IbanRecognizer()),
    "credit_card": _credit_card,
    "us_ssn": _us_ssn,
    "us_itin": _us_itin,
    "uk_nino": _uk_nino,
    "shape": _shape,
}

# The confusable character first, then the lookbehinds (which include it): a pattern that
# starts with a character class lets the regex engine skip to candidates.
_OCR_CONFUSION: Final = re.compile(
    r"[OoIl|](?:(?<=\d.)|(?<=\d[ .-].))(?=[ .-]?\d)|[OoIl|](?<=\d.)(?=[ .-]\d)"
)
_HAS_DIGIT: Final = re.compile(r"\d")
_OCR_DIGIT: Final = {"O": "0", "o": "0", "I": "1", "l": "1", "|": "1"}


@lru_cache(maxsize=8)
def ocr_view(text: str) -> str:
    """The text with O/o → 0 and l/I/| → 1 where they stand between digits (same length).

    Cached: every OCR-aware recognizer asks for the view of the same text in turn."""
    if not _HAS_DIGIT.search(text):
        return text
    return _OCR_CONFUSION.sub(lambda m: _OCR_DIGIT[m.group()], text)


class IdentifierError(ValueError):
    """identifiers.yaml is malformed (unknown validator, bad regex)."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    regex: re.Pattern[str]
    score: float


def load_identifiers(path: Path) -> tuple[list[IdentifierSpec], IdentifierFile]:
    try:
        spec = msgspec.convert(yaml.safe_load(path.read_text(encoding="utf-8")), IdentifierFile)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise IdentifierError(f"{path.name}: {exc}") from exc
    for ident in spec.identifiers:
        if ident.validator not in VALIDATORS:
            raise IdentifierError(f"{ident.entity}: unknown validator {ident.validator!r}")
    return spec.identifiers, spec


# A pattern's first atom: an escape (\d), a character class ([A-Za-z]) or a literal.
_FIRST_ATOM: Final = re.compile(r"\\.|\[(?:\\.|[^\]])*\]|[^\\(\[|?*+{]")


def _compile(regex: str, file: IdentifierFile) -> re.Pattern[str]:
    """first atom + ``before`` + rest + ``after``. ``before`` is written to be checked right
    after the first character (its lookbehinds end with ``.``): a regex that starts with a
    character class is scanned much faster than one that starts with a lookbehind."""
    first = _FIRST_ATOM.match(regex)
    if first is None or regex[first.end():first.end() + 1] in ("{", "*", "+", "?"):
        raise IdentifierError("a pattern must start with one character, escape or class")
    body = regex.replace("(?&S)", file.separator)
    cut = first.end()
    return re.compile(body[:cut] + file.before + "(?:" + body[cut:] + ")" + file.after)


class IdentifierRecognizer(EntityRecognizer):
    def __init__(self, ident: IdentifierSpec, file: IdentifierFile, language: str) -> None:
        self._ident = ident
        self._name = f"StellwerkIdentifier:{ident.entity}"
        self._validate = VALIDATORS[ident.validator]
        self._lengths = sorted(set(ident.lengths), reverse=True)
        try:
            self._patterns = [
                _Compiled(p.name or ident.entity, _compile(p.regex, file), p.score)
                for p in ident.patterns
            ]
        except re.error as exc:
            raise IdentifierError(f"{ident.entity}: bad regex: {exc}") from exc
        super().__init__(
            supported_entities=[ident.entity],
            name=self._name,
            supported_language=language,
            context=ident.context,
        )

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        views = [text]
        if self._ident.ocr:
            folded = ocr_view(text)
            if folded != text:
                views.append(folded)
        found: dict[tuple[int, int], RecognizerResult] = {}
        for view in views:
            for pattern in self._patterns:
                for match in pattern.regex.finditer(view):
                    result = self._check(view, match.start(), match.end(), pattern)
                    if result is not None:
                        key = (result.start, result.end)
                        if key not in found or found[key].score < result.score:
                            found[key] = result
        return list(found.values())

    def _check(self, text: str, start: int, end: int, pattern: _Compiled) -> RecognizerResult | None:
        positions = [i for i in range(start, end) if text[i].isalnum()]
        compact = "".join(text[i] for i in positions).upper()
        for length in self._lengths:
            if length > len(compact):
                continue
            verdict = self._validate(compact[:length])
            if verdict == "invalid":
                continue
            if verdict == "specimen":
                if self._ident.specimen_score is None:
                    continue
                score = self._ident.specimen_score
            else:
                score = pattern.score
            return self._result(start, positions[length - 1] + 1, score, pattern.name)
        return None

    def _result(self, start: int, end: int, score: float, pattern_name: str) -> RecognizerResult:
        return RecognizerResult(
            entity_type=self._ident.entity,
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self._name, original_score=score, pattern_name=pattern_name,
                textual_explanation="validated identifier",
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self._name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def identifier_recognizers(path: Path, language: str) -> list[EntityRecognizer]:
    identifiers, spec = load_identifiers(path)
    return [IdentifierRecognizer(i, spec, language) for i in identifiers if language in i.languages]
