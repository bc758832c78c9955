"""Topic and moderation lexicons, German and English (pure data + a scorer).

Each entry is a regular expression over *folded* text (``normalize.fold``: lower case, ``ß``
reads ``ss``) with a weight. A category's score is ``1 - exp(-sum of weights of the entries
that match)``: one strong cue (weight 1.5) scores 0.78, two 0.95; weak cues (0.4-0.6) count
only together. Topics add an *advice cue* (someone asks what to do) on top of subject terms,
so "the claim covers the hospital stay" is no request for medical advice.

Lexicons are reviewed data, not a model: adding a phrase is a one-line change with a test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final


def _c(entries: Iterable[tuple[str, float]]) -> tuple[tuple[re.Pattern[str], float], ...]:
    return tuple((re.compile(pattern.replace("ß", "ss")), weight) for pattern, weight in entries)


_ADVICE_CUE: Final = re.compile(  # no ß below: folded text reads it as ss
    r"\b(?:should i|shall i|can i|may i|is it safe|what (?:should|can|do) i|how (?:much|many|often) (?:should|can|do) i"
    r"|what do you recommend|recommend|advise|which .{0,30} (?:should|would you)|would you (?:take|buy|invest)"
    r"|soll(?:te)? ich|kann ich|darf ich|was (?:soll|kann|würden sie|würdest du)|was hilft|empfiehl\w*|empfehl\w*"
    r"|raten sie|rätst du|welche[snrm]? .{0,30} (?:soll|würde)|lohnt sich)\b"
)

TOPICS: Final[dict[str, tuple[tuple[re.Pattern[str], float], ...]]] = {
    "medical_advice": _c([
        (r"\b(?:dosage|dose|mg|milligrams?|tablets?|pills?|prescription|antibiotics?|ibuprofen|paracetamol|aspirin"
         r"|antidepressants?|insulin|medications?|medicine|drugs? interaction|side effects?)\b", 0.8),
        (r"\b(?:dosierung|dosis|tabletten?|pillen?|rezept|antibiotik\w*|ibuprofen|paracetamol|aspirin|antidepressiv\w*"
         r"|insulin|medikament\w*|arznei\w*|nebenwirkung\w*|wechselwirkung\w*)\b", 0.8),
        (r"\b(?:symptoms?|diagnos\w+|treat(?:ment)?|cure|pain|fever|infection|blood pressure|rash|headaches?|migraine"
         r"|chest pain|diabetes|cancer|therapy)\b", 0.5),
        (r"\b(?:symptom\w*|diagnose\w*|behandl\w*|heil\w*|schmerz\w*|fieber|entzündung\w*|infektion\w*|blutdruck"
         r"|ausschlag|kopfschmerz\w*|migräne|brustschmerz\w*|diabetes|krebs|therapie\w*)\b", 0.5),
    ]),
    "investment_advice": _c([
        (r"\b(?:stocks?|shares|etfs?|crypto\w*|bitcoin|ethereum|portfolio|dividends?|bonds|index funds?|mutual funds?"
         r"|options trading|day trading|forex)\b", 0.8),
        (r"\b(?:aktien?|etfs?|krypto\w*|bitcoin|ethereum|portfolio|depot|dividende\w*|anleihen?|fonds|indexfonds"
         r"|daytrading|devisen)\b", 0.8),
        (r"\b(?:invest\w*|returns?|yield|savings|retirement|buy|sell)\b", 0.4),
        (r"\b(?:investier\w*|anlegen|geldanlage|rendite|sparen|altersvorsorge|kaufen|verkaufen)\b", 0.4),
    ]),
    "legal_advice": _c([
        (r"\b(?:sue|lawsuit|lawyer|attorney|court|legal action|contract law|liability)\b", 0.7),
        (r"\b(?:verklagen|klage|anwalt|anwältin|gericht|rechtsstreit|haftung|abmahnung)\b", 0.7),
        # Someone's own case: one subject term alone ("the court approved") is no request for advice.
        (r"\b(?:legal advice|my rights|sue (?:him|her|them|my|our|the|for)|take (?:him|her|them|it|my \w+) to court)\b",
         0.7),
        (r"\b(?:rechtsberatung|meine rechte|vor gericht (?:ziehen|gehen)|(?:ihn|sie|meinen \w+|meine \w+) verklagen)\b",
         0.7),
    ]),
}

MODERATION: Final[dict[str, tuple[tuple[re.Pattern[str], float], ...]]] = {
    "violence": _c([
        (r"\b(?:kill|murder|stab|shoot|behead|torture|massacre|slaughter)\w*\b(?:\W+\w+){0,3}?\W+"
         r"(?:him|her|them|people|everyone|victims?|the (?:man|woman|family|neighbou?r))\b", 1.5),
        (r"\b(?:töte|töten|ermorde\w*|ersteche\w*|erschieße\w*|erschiess\w*|foltere\w*|abschlachte\w*)\b", 1.5),
        (r"\b(?:beat (?:him|her|them) (?:up|to death)|break (?:his|her|their) (?:legs|neck)|blood everywhere)\b", 1.0),
        (r"\b(?:zusammenschlagen|totschlagen|blutbad|gemetzel)\b", 1.0),
    ]),
    "self_harm": _c([
        (r"\b(?:kill (?:yourself|myself)|end (?:your|my) (?:own )?life|commit suicide|suicide methods?|ways to die"
         r"|how to (?:self[- ]harm|cut (?:yourself|myself)|overdose))\b", 1.5),
        (r"\b(?:bring dich um|bringe mich um|dein leben beenden|mein leben beenden|sich das leben nehmen"
         r"|suizidmethode\w*|selbstmordmethode\w*|wie man sich (?:ritzt|umbringt|vergiftet)|überdosis nehmen)\b", 1.5),
        (r"\b(?:suicid\w*|self[- ]harm\w*|overdos\w*|lethal dose|slit (?:your|my) wrists?)\b", 0.8),
        (r"\b(?:suizid\w*|selbstmord\w*|selbstverletz\w*|ritzen|tödliche dosis|pulsadern?)\b", 0.8),
    ]),
    "sexual": _c([
        (r"\b(?:explicit sex|sex scene|porn\w*|nude photos?|naked (?:body|photos?)|orgasm\w*|erotic\w*)\b", 1.2),
        (r"\b(?:expliziter sex|sexszene\w*|porn\w*|nacktfoto\w*|nacktbild\w*|orgasm\w*|erotisch\w*)\b", 1.2),
        (r"\b(?:minor|child|kid|teen)s?\b(?:\W+\w+){0,4}?\W+(?:sexual|sex|nude|naked)\b", 2.5),
    ]),
    "hate": _c([
        (r"\b(?:subhuman|vermin|inferior race|should be exterminated|go back to your country|gas the)\b", 1.5),
        (r"\b(?:untermensch\w*|ungeziefer|minderwertige rasse|ausrotten|vergasen|ausländer raus)\b", 1.5),
        (r"\b(?:all|these) (?:muslims|jews|christians|immigrants|refugees|gays|blacks|women) (?:are|should)\b", 1.0),
        (r"\b(?:alle|diese) (?:muslime|juden|christen|ausländer|flüchtlinge|schwulen|schwarzen|frauen) (?:sind|sollten|gehören)\b",
         1.0),
    ]),
    "illegal_instructions": _c([
        (r"\b(?:how to (?:make|build|synthesi[sz]e|cook) (?:a |an )?(?:bomb|explosives?|pipe bomb|meth\w*|nerve agent"
         r"|ricin|sarin))\b", 2.0),
        (r"\b(?:bombe|sprengstoff|rohrbombe|methamphetamin|crystal meth|nervengift|rizin|sarin)\b(?:\W+\w+){0,4}?\W+"
         r"(?:bauen|herstellen|basteln|synthetisieren|kochen|mischen)\b", 2.0),
        (r"\b(?:step \d|first,? (?:mix|combine|obtain))\b(?:\W+\w+){0,8}?\W+(?:ammonium nitrate|acetone peroxide"
         r"|pseudoephedrine|detonator|fuse)\b", 1.5),
        (r"\b(?:schritt \d|zuerst)\b(?:\W+\w+){0,8}?\W+(?:ammoniumnitrat|acetonperoxid|pseudoephedrin|zünder|zündschnur)\b", 1.5),
        (r"\b(?:pick a lock|hotwire a car|launder money|skim credit cards|make a fake (?:id|passport)"
         r"|buy (?:a )?(?:gun|weapon) without)\b", 1.0),
        (r"\b(?:schloss knacken|auto kurzschließen|geld waschen|geldwäsche betreiben|kreditkarten skimmen"
         r"|gefälschten (?:ausweis|pass))\b", 1.0),
    ]),
}


def _score(total: float) -> float:
    return round(1.0 - math.exp(-total), 3)


class Lexicon:
    """All entries of a lexicon in one alternation: one scan of the text instead of one per
    entry (each ``\\b(?:…)`` search walks the whole text; ~40 µs per 1,000 characters each).

    The scan finds non-overlapping matches, so an entry can hide behind another that matched
    at the same place ("ibuprofen" is in the English and the German entry; "pain" inside
    "chest pain"). An entry's match can only start inside a span the scan consumed — at any
    other position the scan tried every entry — so the entries not yet found are tried with
    ``match`` at the positions of those spans: the same set of entries as searching each."""

    def __init__(self, table: dict[str, tuple[tuple[re.Pattern[str], float], ...]]) -> None:
        self.entries = [(category, pattern, weight) for category, entries in table.items()
                        for pattern, weight in entries]
        self.categories = tuple(table)
        if not all(pattern.pattern.startswith(r"\b") for _, pattern, _ in self.entries):
            raise ValueError("lexicon entries start at a word boundary")
        # One ``\\b`` in front of the alternation: the engine checks it once per position.
        self._scan = re.compile(r"\b(?:" + "|".join(f"(?P<e{i}>{pattern.pattern[2:]})"
                                                    for i, (_, pattern, _) in enumerate(self.entries)) + ")")

    def matched(self, folded: str) -> set[int]:
        found: set[int] = set()
        spans: list[tuple[int, int]] = []
        for match in self._scan.finditer(folded):
            found.add(int((match.lastgroup or "e-1")[1:]))
            spans.append(match.span())
        if spans and len(found) < len(self.entries):
            # Every entry starts with ``\\b`` and a word character: a hidden match starts at
            # the beginning of a word inside a consumed span.
            starts = [at for start, end in spans for at in range(start, end)
                      if folded[at].isalnum() and (at == 0 or not (folded[at - 1].isalnum() or folded[at - 1] == "_"))]
            for index, (_, pattern, _) in enumerate(self.entries):
                if index not in found and any(pattern.match(folded, at) for at in starts):
                    found.add(index)
        return found

    def totals(self, folded: str) -> dict[str, float]:
        totals = dict.fromkeys(self.categories, 0.0)
        for index in self.matched(folded):
            category, _, weight = self.entries[index]
            totals[category] += weight
        return totals


_TOPICS: Final = Lexicon(TOPICS)
_MODERATION: Final = Lexicon(MODERATION)


def topic_scores(folded: str) -> dict[str, float]:
    """Per topic: how strongly ``folded`` asks for advice on it (0..1)."""
    totals = _TOPICS.totals(folded)
    if not any(totals.values()):
        return dict.fromkeys(totals, 0.0)
    cue = 1.0 if _ADVICE_CUE.search(folded) else 0.5
    return {topic: _score(total * cue) if total else 0.0 for topic, total in totals.items()}


def moderation_scores(folded: str) -> dict[str, float]:
    """Per harm category: how strongly ``folded`` contains it (0..1)."""
    return {category: _score(total) if total else 0.0 for category, total in _MODERATION.totals(folded).items()}


def topic_scores_reference(folded: str) -> dict[str, float]:
    """``topic_scores`` searching entry by entry (kept to test ``Lexicon`` against)."""
    cue = 1.0 if _ADVICE_CUE.search(folded) else 0.5
    scores: dict[str, float] = {}
    for topic, entries in TOPICS.items():
        total = sum(weight for pattern, weight in entries if pattern.search(folded))
        scores[topic] = _score(total * cue) if total else 0.0
    return scores


def moderation_scores_reference(folded: str) -> dict[str, float]:
    scores: dict[str, float] = {}
    for category, entries in MODERATION.items():
        total = sum(weight for pattern, weight in entries if pattern.search(folded))
        scores[category] = _score(total) if total else 0.0
    return scores
