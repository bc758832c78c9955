"""Phone numbers: German landline and mobile (+49, 0049 and national), international, NANP.

Presidio's PhoneRecognizer runs libphonenumber's matcher over the whole text, which its
own issues name as the slowest recognizer. Here a regex finds candidates and
libphonenumber only checks their length plausibility. Formats with separators or a
country code score high enough alone; a bare digit run needs a context word (Tel., Handy,
phone …). Order, invoice and article numbers just before a candidate lower its score.
"""

from __future__ import annotations

import re
from typing import Final

import phonenumbers
from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

# Not inside a longer run of digit groups ("Rechnung 45 493 066 682" holds no phone number).
_START: Final = r"(?<![\w+/.,-])(?<!\d )"
_END: Final = r"(?:\s?(?:x|ext\.?|Durchwahl|DW)\s?\d{1,5})?(?![\w-])"

PATTERNS: Final = [
    Pattern(
        "international (+49 30 1234567, 0049 171 2345678, +49 (0) 89 123456)",
        _START + r"(?:\+|00)[1-9]\d{0,2}[\s.-]?(?:\(0\)\s?)?\(?\d{1,5}\)?(?:[\s./-]?\d{2,8}){1,4}" + _END,
        0.7,
    ),
    Pattern(
        "German national with separator (030 1234567, (0171) 234567, 089/123456-78)",
        _START + r"(?:\(0\d{2,5}\)|0\d{2,5})\s?[\s/-]\s?\d{2,8}(?:[\s-]\d{1,6}){0,2}" + _END,
        0.6,
    ),
    Pattern(
        "German national without separator (01712345678)",
        _START + r"0[1-9]\d{6,11}" + _END,
        0.35,
    ),
    Pattern(
        "NANP without separator (2125550147)",
        _START + r"[2-9]\d{2}[2-9]\d{6}" + _END,
        0.3,
    ),
    Pattern(
        "NANP ((212) 555-0147, 212-555-0147, 212.555.0147)",
        _START + r"(?:1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}" + _END,
        0.6,
    ),
]

CONTEXT: Final = [
    "tel", "telefon", "telefonnummer", "rufnummer", "handy", "mobil", "mobilnummer", "fax",
    "durchwahl", "anrufen", "erreichbar", "rückruf", "phone", "call", "mobile", "cell",
    "telephone", "number", "reach",
]

# Identifiers that look like phone numbers: a preceding word like these lowers the score.
_NOT_A_PHONE: Final = re.compile(
    r"(?i)(bestell|auftrag|rechnung|artikel|kunden|vertrag|vorgang|ticket|aktenzeichen|"
    r"order|invoice|article|item|sku|ref|case|tracking|sendung|serien|serial|charge|lot)"
    r"\w*\W{0,3}(?:nr\.?|nummer|no\.?|number|#)?\W{0,3}$"
)
# 3-2-4 digits with dashes is how a US social security number is written, never a phone
# number (US_SSN in identifiers.yaml reports it).
_SSN_SHAPE: Final = re.compile(r"\d{3}-\d{2}-\d{4}")
_NEGATIVE_WINDOW: Final = 30
_NEGATIVE_PENALTY: Final = 0.4


class PhoneNumberRecognizer(PatternRecognizer):
    def __init__(self, supported_language: str) -> None:
        super().__init__(
            supported_entity="PHONE_NUMBER",
            name="StellwerkPhoneRecognizer",
            supported_language=supported_language,
            patterns=PATTERNS,
            context=CONTEXT,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        if _SSN_SHAPE.fullmatch(pattern_text):
            return False
        main = re.split(r"\s?(?:x|ext\.?|Durchwahl|DW)\s?\d", pattern_text, maxsplit=1)[0]
        if not 6 <= sum(ch.isdigit() for ch in main) <= 15:
            return False
        region = None if main.startswith(("+", "00")) else ("DE" if main.lstrip("(").startswith("0") else "US")
        candidate = "+" + main[2:] if main.startswith("00") else main
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            return False
        # None keeps the pattern's score (True would lift it to 1.0).
        return None if phonenumbers.is_possible_number(number) else False

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for result in results:
            before = text[max(0, result.start - _NEGATIVE_WINDOW):result.start]
            if _NOT_A_PHONE.search(before):
                result.score = max(0.0, result.score - _NEGATIVE_PENALTY)
        return results
