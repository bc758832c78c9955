"""Street addresses: German (Musterstraße 12a, 10115 Berlin) and US (603 Ray Camp, Austin, TX 78701).

Entity ``STREET_ADDRESS`` (identifying) spans street, house number and, when present,
postcode and city. A postcode or city alone is ``DE_PLZ`` / ``LOCATION`` (quasi-identifying).
"""

from __future__ import annotations

import re
from typing import Final

from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

_UPPER: Final = "A-ZÄÖÜ"
_LOWER: Final = "a-zäöüß"
_GERMAN_SUFFIX: Final = (
    r"(?:straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|"
    r"markt|graben|kamp|stieg|twiete|wall|zeile|promenade|steg|berg|hof|park|anger|tor)"
)
# Name part: "Hauptstraße", "Magdalena-Hein-Allee", "Am Alten Markt", "Drewesgasse".
# Articles and pronouns are not street names: "Die Straße 12 Jahre", "Der Weg 3".
_NOT_A_STREET_NAME: Final = (
    r"(?!(?:Die|Der|Das|Den|Dem|Des|Ein|Eine|Einen|Diese|Dieser|Jede|Jeder|Unsere|Unser|Ihre|"
    r"Ihr|Meine|Mein|Keine|Kein|Welche|Welcher|Jene|Alle|Viele|Neuen|Nächste|Letzte)\s)"
)
_GERMAN_STREET: Final = (
    rf"{_NOT_A_STREET_NAME}(?:(?:Am|An der|Auf dem|Im|In der|Zum|Zur|Unter den|Alte|Neue|Große|Kleine)\s)?"
    # hyphenated parts freely, at most one further word: "Berliner Straße", not
    # "Treffpunkt Am Alten Markt"
    rf"[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}][{_LOWER}]+)*(?: [{_UPPER}][{_LOWER}]+)?"
    rf"[- ]?(?i:{_GERMAN_SUFFIX})"
)
_HOUSE_NUMBER: Final = (
    r"\d{1,4}(?:\s?[a-zA-Z](?![\wäöüß]))?(?:\s?[-/]\s?\d{1,4}(?:\s?[a-zA-Z](?![\wäöüß]))?)?(?![\d.,]\d)"
)
_GERMAN_CITY: Final = (
    rf"(?:,? ?|\s*\n\s*|\s*\|\s*)\d{{5}} [{_UPPER}][{_LOWER}]+(?:[- /](?:[{_UPPER}][{_LOWER}]+|"
    rf"a\.\s?d\.|am|an der|im|in der|ob der|bei|\(\w+\)))*"
)

_US_SUFFIX: Final = (
    r"(?:Alley|Avenue|Ave|Bend|Bluff|Bluffs|Boulevard|Blvd|Branch|Bridge|Brook|Brooks|Burg|Burgs|"
    r"Bypass|Camp|Canyon|Cape|Causeway|Center|Centers|Circle|Circles|Cir|Cliff|Cliffs|Club|"
    r"Common|Commons|Corner|Corners|Course|Court|Courts|Ct|Cove|Coves|Creek|Crescent|Crest|"
    r"Crossing|Crossroad|Curve|Dale|Dam|Divide|Drive|Drives|Dr|Estate|Estates|Expressway|"
    r"Extension|Extensions|Fall|Falls|Ferry|Field|Fields|Flat|Flats|Ford|Fords|Forest|Forge|"
    r"Forges|Fork|Forks|Fort|Freeway|Garden|Gardens|Gateway|Glen|Glens|Green|Greens|Grove|"
    r"Groves|Harbor|Harbors|Haven|Heights|Highway|Hwy|Hill|Hills|Hollow|Inlet|Island|Islands|"
    r"Isle|Junction|Junctions|Key|Keys|Knoll|Knolls|Lake|Lakes|Land|Landing|Lane|Ln|Light|"
    r"Lights|Loaf|Lock|Locks|Lodge|Loop|Mall|Manor|Manors|Meadow|Meadows|Mews|Mill|Mills|"
    r"Mission|Motorway|Mount|Mountain|Mountains|Neck|Orchard|Oval|Overpass|Park|Parks|Parkway|"
    r"Parkways|Pass|Passage|Path|Pike|Pine|Pines|Place|Pl|Plain|Plains|Plaza|Point|Points|Port|"
    r"Ports|Prairie|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|Ridges|River|Road|Roads|Rd|Route|"
    r"Row|Rue|Run|Shoal|Shoals|Shore|Shores|Skyway|Spring|Springs|Spur|Spurs|Square|Squares|"
    r"Station|Stravenue|Stream|Street|Streets|St|Summit|Terrace|Throughway|Trace|Track|"
    r"Trafficway|Trail|Trailer|Tunnel|Turnpike|Underpass|Union|Unions|Valley|Valleys|Via|"
    r"Viaduct|View|Views|Village|Villages|Ville|Vista|Walk|Walks|Wall|Way|Ways|Well|Wells)\.?"
)
_US_STREET: Final = (
    rf"\b\d{{1,6}} (?:[NSEW]\.? )?(?:[A-Z][a-z]+ ){{1,3}}{_US_SUFFIX}"
    rf"(?:\s(?:Apt\.|Suite|Unit|#)\s?\d{{1,5}})?"
)
_US_CITY: Final = r"(?:,? ?|\s*\n\s*|\s*\|\s*)(?:[A-Z][a-z]+ ?){1,3}, [A-Z]{2} \d{5}(?:-\d{4})?"
# US military mail (Faker generates it, real customer data has it): "PSC 1234, Box 5678,
# APO AE 09123", "USNS Hudson, FPO AA 28283".
_US_MILITARY: Final = (
    r"\b(?:(?:PSC|Unit|CMR) \d{4}, Box \d{4}|(?:USNS|USS|USCGC) [A-Z][a-z]+), [AF]PO A[AEP] \d{5}\b"
)

PATTERNS_DE: Final = [
    Pattern("German street, number, postcode and city",
            rf"\b{_GERMAN_STREET}\s{_HOUSE_NUMBER}{_GERMAN_CITY}", 0.85),
    Pattern("German street and number", rf"\b{_GERMAN_STREET}\s{_HOUSE_NUMBER}", 0.6),
]
PATTERNS_EN: Final = [
    Pattern("US street, city, state, ZIP", _US_STREET + _US_CITY, 0.85),
    Pattern("US street", _US_STREET, 0.55),
    Pattern("US military address", _US_MILITARY, 0.85),
    *PATTERNS_DE,
]
# Cheap pre-check with the stdlib engine: most texts name no street at all, and the full
# patterns are the most expensive of all recognizers (~0.5 ms per 1,000 characters).
_MAYBE_ADDRESS: Final = re.compile(
    rf"(?i:{_GERMAN_SUFFIX})\s\d|\d {_US_SUFFIX}|\d \w+ {_US_SUFFIX}|\d \w+ \w+ {_US_SUFFIX}|[AF]PO A[AEP] \d"
)

CONTEXT: Final = [
    "adresse", "anschrift", "wohnhaft", "wohnt", "wohnort", "straße", "lieferadresse",
    "address", "lives", "resides", "street", "shipping", "billing",
]


class StreetAddressRecognizer(PatternRecognizer):
    def __init__(self, supported_language: str) -> None:
        super().__init__(
            supported_entity="STREET_ADDRESS",
            name="StellwerkStreetAddressRecognizer",
            supported_language=supported_language,
            patterns=PATTERNS_DE if supported_language == "de" else PATTERNS_EN,
            context=CONTEXT,
            # Presidio's default flags include IGNORECASE; capitalisation is evidence here.
            global_regex_flags=re.DOTALL | re.MULTILINE,
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        if not _MAYBE_ADDRESS.search(text):
            return []
        results: list[RecognizerResult] = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return results
