"""Presidio's generic and German recognizers, registered once per language.

Presidio ships context words in English only; German context words are added here so that
context boosts work on German text too. Entity names stay Presidio's own.
"""

from __future__ import annotations

import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DeBsnrRecognizer,
    DeFuehrerscheinRecognizer,
    DeHandelsregisterRecognizer,
    DeHealthInsuranceRecognizer,
    DeIdCardRecognizer,
    DeKfzRecognizer,
    DeLanrRecognizer,
    DePassportRecognizer,
    DePlzRecognizer,
    DeSocialSecurityRecognizer,
    DeTaxIdRecognizer,
    DeTaxNumberRecognizer,
    DeVatIdRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    UrlRecognizer,
)

from services.dlp.recognizers.dates import DateTimeRecognizer

# tldextract's default extractor downloads the Public Suffix List on first use; this one
# uses the snapshot bundled with the package and never touches the network.
_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return bool(_OFFLINE_TLD(pattern_text).fqdn)


GERMAN_CONTEXT: dict[str, list[str]] = {
    "EMAIL_ADDRESS": ["email", "e-mail", "mail", "adresse", "kontakt", "schreiben"],
    "IBAN_CODE": ["iban", "konto", "kontonummer", "bankverbindung", "überweisung", "bank"],
    "CREDIT_CARD": ["kreditkarte", "karte", "kartennummer", "visa", "mastercard", "amex"],
    "IP_ADDRESS": ["ip", "ip-adresse", "adresse", "server", "rechner", "host"],
    "URL": ["url", "link", "webseite", "website", "seite"],
}

ENGLISH_CONTEXT: dict[str, list[str]] = {
    "DE_TAX_ID": ["tax id", "tax identification", "taxpayer", "tin"],
    "DE_TAX_NUMBER": ["tax number", "tax no"],
    "DE_HEALTH_INSURANCE": ["health insurance", "insurance number", "insured", "kvnr"],
    "DE_SOCIAL_SECURITY": ["social security", "pension insurance", "insurance number"],
    "DE_ID_CARD": ["id card", "identity card", "national id", "personalausweis"],
    "DE_PASSPORT": ["passport", "reisepass"],
    "DE_VAT_ID": ["vat", "vat id", "vat number", "ust-idnr"],
    "DE_PLZ": ["postcode", "postal code", "zip"],
    "DE_KFZ": ["license plate", "licence plate", "number plate", "registration"],
    "DE_FUEHRERSCHEIN": ["driving licence", "driver's license", "driving license"],
    "DE_HANDELSREGISTER": ["commercial register", "register court"],
    "DE_LANR": ["physician number", "doctor number", "lanr"],
    "DE_BSNR": ["practice number", "bsnr"],
}

# Presidio's card pattern predates Mastercard's 2-series (2221-2720); the Luhn check stays.
CREDIT_CARD_PATTERN = Pattern(
    "credit card incl. Mastercard 2-series",
    r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2[2-7]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))"
    r"[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b",
    0.3,
)

GERMAN_RECOGNIZER_CLASSES: tuple[type[PatternRecognizer], ...] = (
    DeTaxIdRecognizer,
    DeTaxNumberRecognizer,
    DeHealthInsuranceRecognizer,
    DeSocialSecurityRecognizer,
    DeIdCardRecognizer,
    DePassportRecognizer,
    DeVatIdRecognizer,
    DePlzRecognizer,
    DeKfzRecognizer,
    DeFuehrerscheinRecognizer,
    DeHandelsregisterRecognizer,
    DeLanrRecognizer,
    DeBsnrRecognizer,
)


def _german_id(cls: type[PatternRecognizer], language: str) -> PatternRecognizer:
    # German identifiers also appear in English text (an English mail about a German
    # employee), so the German recognizers run for both languages.
    probe: PatternRecognizer = cls()  # type: ignore[call-arg]  # subclasses default every argument
    entity = probe.supported_entities[0]
    context = list(probe.context or [])
    if language == "en":
        context += ENGLISH_CONTEXT.get(entity, [])
    return cls(context=context, supported_language=language)  # type: ignore[call-arg]


def generic_recognizers(language: str) -> list[EntityRecognizer]:
    german = language == "de"

    def ctx(entity: str, english: list[str]) -> list[str]:
        return english + GERMAN_CONTEXT.get(entity, []) if german else english

    return [
        OfflineEmailRecognizer(supported_language=language,
                        context=ctx("EMAIL_ADDRESS", ["email", "mail", "e-mail", "contact"])),
        IbanRecognizer(supported_language=language,
                       context=ctx("IBAN_CODE", ["iban", "bank", "account", "transfer"])),
        CreditCardRecognizer(supported_language=language, patterns=[CREDIT_CARD_PATTERN],
                             context=ctx("CREDIT_CARD", ["credit", "card", "visa", "mastercard",
                                                         "amex", "cc"])),
        IpRecognizer(supported_language=language,
                     context=ctx("IP_ADDRESS", ["ip", "ipv4", "ipv6", "address", "server"])),
        UrlRecognizer(supported_language=language,
                      context=ctx("URL", ["url", "website", "link", "site"])),
        DateTimeRecognizer(language),
        *(_german_id(cls, language) for cls in GERMAN_RECOGNIZER_CLASSES),
    ]
