"""PERSON from name gazetteers, honorifics and context cues (German and English).

No German NER model is installable from PyPI, and spaCy's small English NER costs ~20 ms
per 1,000 characters, so names are found with lists of first and last names (from
names-dataset, see data/README.md) and the cues people actually write:

* honorific or title + capitalised word(s): "Frau Dr. Keller", "Mr. O'Neill"   → 0.85
* known first name + known last name (or a second first name): "Anna Maria Schulz" → 0.85
* known first name + unknown capitalised word: "Adam Rörricht"                 → 0.6
* "Lastname, Firstname" (both known)                                           → 0.8
* greeting + capitalised word(s) + comma: "Hallo Leokadia,", "Dear Swen,"        → 0.75
* a known first name alone, or an unknown capitalised word before a known last name
  ("Vitus Sauer")                                                              → 0.4 / 0.45,
  i.e. only with a context word nearby (Kundin, Patient, colleague …) via Presidio's
  context enhancer (which ignores stop words such as "von" or "lieber").

Capitalisation is the main evidence; in German every noun is capitalised, so the lists
decide, and ``not_names.txt`` keeps months, places, brands and nouns out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.lang.de.stop_words import STOP_WORDS as GERMAN_STOP_WORDS
from spacy.lang.en.stop_words import STOP_WORDS as ENGLISH_STOP_WORDS


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TOKEN: Final = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
HONORIFICS: Final = _words(
    "herr herrn frau fräulein hr. fr. hrn. dr. dr prof. prof professor professorin "
    "dipl. ing. mag. mr mr. mrs mrs. ms ms. miss mister madam sir dame lady lord "
    "familie fam. schwester bruder pfarrer pastor freiherr freifrau graf gräfin baron baronin"
)
# Titles that may follow an honorific, in any number, before the name ("Herr Prof. Dr. med.
# von Hohenstein", "Frau Dipl.-Ing. Keller", "Prof. Dr. Dr. h.c. mult. Weber"). Tokens are
# words plus their period; "Dipl.-Ing." is the two tokens "Dipl." and "Ing.".
_TITLES: Final = _words(
    "dr. dr prof. prof professor professorin med. dent. vet. rer. nat. pol. oec. soc. phil. jur. "
    "theol. habil. h. c. mult. ing. dipl. kfm. kffr. psych. päd. inf. biol. chem. phys. math. "
    "sc. mag. lic. univ. priv. doz. pd apl. em. mba msc bsc llm phd"
)
GREETINGS: Final = _words(
    "hallo hi hey liebe lieber moin servus grüß dear hello hiya greetings morning"
)
_ABBREVIATIONS: Final = frozenset(w for w in HONORIFICS | _TITLES if w.endswith("."))
PARTICLES: Final = _words(
    "von van de der den zu vom zum di da del della le la du ten ter"
)
# After an honorific a particle chain must open with one of these: "Herr von Weizsäcker",
# but "Herr der Lage" and "Herr der Ringe" are no names.
_LEADING_PARTICLES: Final = _words("von van de zu vom zum di da del della du ten ter")
CONTEXT: Final = [
    "name", "heißt", "kollege", "kollegin", "mitarbeiter", "mitarbeiterin", "kunde", "kundin",
    "patient", "patientin", "ansprechpartner", "ansprechpartnerin", "hallo", "liebe", "lieber",
    "grüße", "gruß", "dank", "bewerber", "bewerberin", "named", "called", "colleague",
    "employee", "customer", "client", "contact", "dear", "hello", "regards", "thanks",
    "applicant", "manager", "signed", "gespräch", "absage", "treffen", "konto", "arztbrief",
    "ansprechperson", "person", "account", "meeting", "rejection", "letter",
]

# "Edwards, Martin and Miller" is a firm, not "Lastname, Firstname"; "Müller, Anna, bitte"
# is a name followed by a comma.
_ENUMERATION_NEXT: Final = re.compile(
    r"\s*(?:&|and\b|und\b|\+|,\s*[A-ZÄÖÜ][\w'-]*\s*(?:,|&|and\b|und\b))"
)

_COMPANY_FORM_NEXT: Final = re.compile(
    r"[ ,&-]*(?:GmbH|AG|KG|SE|OHG|GbR|UG|mbH|e\.\s?V\.|e\.\s?G\.|eG|Stiftung|Group|Gruppe|Holding|"
    r"Inc\.?|Ltd\.?|LLC|LLP|PLC|plc|Corp\.?|Co\.|& Co|and Sons|& Sons|Söhne|Partner)\b"
)

SCORE_HONORIFIC: Final = 0.85
SCORE_FULL_NAME: Final = 0.85
SCORE_LAST_FIRST: Final = 0.8
SCORE_FIRST_UNKNOWN_LAST: Final = 0.6
SCORE_GREETING: Final = 0.75
SCORE_UNKNOWN_FIRST_KNOWN_LAST: Final = 0.45
SCORE_FIRST_NAME_ONLY: Final = 0.4
# Capitals or lower case: both parts must be known names and no common word.
SCORE_CASELESS_FULL: Final = 0.6
SCORE_CASELESS_HONORIFIC: Final = 0.7
_MAX_NAME_TOKENS: Final = 4


def fold(word: str) -> str:
    """Lookup key when case is no evidence: "O'NEILL", "o'neill", "O Neill" → "oneill"."""
    return word.casefold().replace("'", "").replace("’", "").replace(" ", "")


@dataclass(frozen=True, slots=True)
class NameLists:
    first: frozenset[str]
    last: frozenset[str]
    never: frozenset[str]
    ambiguous: frozenset[str]
    # German/English stop words, capitalised: "Am Alten Markt", "Will you": they never start
    # a name, but may end one ("Woody Allen").
    function_words: frozenset[str]
    # Case-folded keys (apostrophes and spaces removed: "O'Neill" → "oneill") for names
    # written in capitals or lower case, where capitalisation is no evidence.
    first_folded: frozenset[str] = frozenset()
    last_folded: frozenset[str] = frozenset()
    # Never a name when the case is lost: never/ambiguous entries, stop words, and common
    # words that are also names ("frank", "lang", "will", "king"; not_names.txt [lowercase]).
    not_folded: frozenset[str] = frozenset()

    @classmethod
    def load(cls, directory: Path) -> NameLists:
        def names(filename: str) -> frozenset[str]:
            text = (directory / filename).read_text(encoding="utf-8")
            return frozenset(
                line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
            )

        never: set[str] = set()
        ambiguous: set[str] = set()
        lowercase: set[str] = set()
        function_words = {w.capitalize() for w in GERMAN_STOP_WORDS | ENGLISH_STOP_WORDS}
        section: set[str] | None = None
        for line in (directory / "not_names.txt").read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line == "[never]":
                section = never
            elif line == "[ambiguous]":
                section = ambiguous
            elif line == "[lowercase]":
                section = lowercase
            elif section is not None:
                section.add(line)
        first, last = names("first_names.txt"), names("last_names.txt")
        return cls(first, last, frozenset(never),
                   frozenset((ambiguous | function_words) - never), frozenset(function_words),
                   frozenset(fold(n) for n in first), frozenset(fold(n) for n in last),
                   frozenset(fold(w) for w in never | ambiguous | function_words | lowercase))


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def bare(self) -> str:
        return self.text.rstrip(".")

    @property
    def capitalised(self) -> bool:
        return self.text[0].isupper() and not self.text.isupper()

    @property
    def caseless(self) -> bool:
        """All capitals ("MÜLLER") or all lower case ("müller"): case says nothing."""
        letters = self.bare
        return len(letters) > 1 and (letters.isupper() or letters.islower())


def _inner_capital(word: str) -> bool:
    # "McDonald", "O'Neill", "DiCaprio": the lists spell them "Mcdonald", "Oneill".
    return any(ch.isupper() for ch in word[1:]) or "'" in word


class PersonGazetteerRecognizer(EntityRecognizer):
    NAME: Final = "StellwerkPersonGazetteer"

    def __init__(self, names: NameLists, supported_language: str) -> None:
        self._names = names
        super().__init__(
            supported_entities=["PERSON"],
            name=self.NAME,
            supported_language=supported_language,
            context=CONTEXT,
        )

    def load(self) -> None:
        pass

    # -- name-part tests ---------------------------------------------------------------

    def _part_known(self, word: str, table: frozenset[str]) -> bool:
        return word in table or ("-" in word and all(p in table for p in word.split("-")))

    def _is_first(self, word: str) -> bool:
        return word not in self._names.never and (
            self._part_known(word, self._names.first)
            or (_inner_capital(word) and self._folded(word, self._names.first_folded))
        )

    def _is_last(self, word: str) -> bool:
        return word not in self._names.never and (
            self._part_known(word, self._names.last)
            or (_inner_capital(word) and self._folded(word, self._names.last_folded))
        )

    def _folded(self, word: str, table: frozenset[str], *, any_part: bool = False) -> bool:
        """Known when case is ignored; every hyphen part (or, for double surnames, one of
        them) known, none a common word."""
        parts = [fold(p) for p in word.split("-")]
        if any(len(p) < 2 or p in self._names.not_folded for p in parts):
            return False
        hits = [p in table for p in parts]
        return any(hits) if any_part else all(hits)

    def _caseless_name(self, token: _Token, *, first: bool) -> bool:
        names = self._names
        return token.caseless and (
            self._folded(token.bare, names.first_folded) if first
            else self._folded(token.bare, names.last_folded, any_part=True)
        )

    def _usable(self, token: _Token) -> bool:
        return token.capitalised and token.bare not in self._names.never and not token.text.endswith(".")

    # -- scan ---------------------------------------------------------------------------

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        tokens = [self._token(text, m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
        results: list[RecognizerResult] = []
        i = 0
        while i < len(tokens):
            found = self._match_at(text, tokens, i)
            if found is None:
                i += 1
                continue
            start_index, end_index, score = found
            if _COMPANY_FORM_NEXT.match(text, tokens[end_index].end):
                # "Robert Bosch Stiftung", "Ziegert Hein GbR": a firm named after people
                i = end_index + 1
                continue
            results.append(self._result(tokens[start_index].start, tokens[end_index].end, score))
            i = end_index + 1
        return results

    @staticmethod
    def _token(text: str, word: str, start: int, end: int) -> _Token:
        # The period belongs to the token only for abbreviations ("Dr.", "Hr."); after a
        # name it ends the sentence ("… Jonas Weber.").
        if text[end:end + 1] == "." and (word.lower() + ".") in _ABBREVIATIONS:
            return _Token(word + ".", start, end + 1)
        return _Token(word, start, end)

    def _adjacent(self, text: str, left: _Token, right: _Token) -> bool:
        gap = text[left.end:right.start]
        # "" and "-" after a period: "h.c.", "Dipl.-Ing."
        return gap in (" ", "\u00a0") or (left.text.endswith(".") and gap in ("", "-"))

    def _match_at(self, text: str, tokens: list[_Token], i: int) -> tuple[int, int, float] | None:
        token = tokens[i]
        lowered = token.text.lower()
        names = self._names
        if lowered in HONORIFICS and (token.text[0].isupper() or token.caseless):
            return self._after_honorific(text, tokens, i)
        if lowered in GREETINGS and i + 1 < len(tokens):
            greeted = self._greeting(text, tokens, i)
            if greeted is not None:
                return greeted
        if token.caseless:
            return self._caseless_match(text, tokens, i)
        if not self._usable(token):
            return None
        word = token.bare
        if word in names.function_words:
            return None
        if (self._is_last(word) or (
                "-" in word and self._folded(word, names.last_folded, any_part=True)
        )) and i + 1 < len(tokens):
            # "Müller, Anna", "Müller-Lüdenscheidt, Anna-Lena"
            first = tokens[i + 1]
            if text[token.end:first.start].strip() == "," and self._usable(first) \
                    and self._is_first(first.bare) and first.bare not in names.ambiguous \
                    and word not in names.ambiguous \
                    and not _ENUMERATION_NEXT.match(text, first.end):
                return i, i + 1, SCORE_LAST_FIRST
        if self._is_first(word):
            end = self._extend(text, tokens, i, require_known=True)
            if end > i:
                return i, end, SCORE_FULL_NAME
            if word in names.ambiguous:
                return None
            end = self._extend(text, tokens, i, require_known=False)
            if end > i:
                return i, end, SCORE_FIRST_UNKNOWN_LAST
            return i, i, SCORE_FIRST_NAME_ONLY
        if word not in names.ambiguous and i + 1 < len(tokens):
            following = tokens[i + 1]
            if self._adjacent(text, token, following) and self._usable(following) \
                    and self._is_last(following.bare) and following.bare not in names.ambiguous:
                return i, i + 1, SCORE_UNKNOWN_FIRST_KNOWN_LAST
        return None

    def _after_honorific(self, text: str, tokens: list[_Token], i: int) -> tuple[int, int, float] | None:
        """ "Herr Prof. Dr. med. von Hohenstein", "Frau Dipl.-Ing. Keller", "herr müller":
        any chain of titles, an optional nobiliary particle chain, then the name. The span
        starts at the particle (titles are not the person)."""
        names = self._names
        j = i + 1
        while j < len(tokens) and tokens[j].text.lower() in _TITLES and self._adjacent(text, tokens[j - 1], tokens[j]):
            j += 1
        k = j
        if k < len(tokens) and tokens[k].text.lower() in _LEADING_PARTICLES:
            while k < len(tokens) and self._particle(tokens, k) \
                    and self._adjacent(text, tokens[k - 1], tokens[k]):
                k += 1
        if k >= len(tokens) or not self._adjacent(text, tokens[k - 1], tokens[k]):
            return None
        name = tokens[k]
        if self._usable(name):
            if k == j and name.bare in names.ambiguous and not (
                self._is_first(name.bare) or self._is_last(name.bare)
            ):
                return None
            return j, self._extend(text, tokens, k, require_known=False), SCORE_HONORIFIC
        if self._caseless_name(name, first=False) or self._caseless_name(name, first=True):
            end = k
            if k + 1 < len(tokens) and self._adjacent(text, name, tokens[k + 1]) \
                    and self._caseless_name(tokens[k + 1], first=False):
                end = k + 1
            return j, end, SCORE_CASELESS_HONORIFIC
        return None

    @staticmethod
    def _particle(tokens: list[_Token], k: int) -> bool:
        word = tokens[k].text.lower()
        if word in PARTICLES:
            return True
        # "von und zu Guttenberg"
        return word == "und" and 0 < k < len(tokens) - 1 and tokens[k - 1].text.lower() == "von" \
            and tokens[k + 1].text.lower() == "zu"

    def _caseless_match(self, text: str, tokens: list[_Token], i: int) -> tuple[int, int, float] | None:
        """Names in capitals or lower case: "MÜLLER-LÜDENSCHEIDT, ANNA-LENA", "anna schulz".
        Case is no evidence here, so both parts must be known names and neither a common
        word; a single word never counts."""
        token = tokens[i]
        if i + 1 >= len(tokens):
            return None
        following = tokens[i + 1]
        comma = text[token.end:following.start].strip() == ","
        if comma and token.bare.isupper() and self._usable(following) \
                and self._is_first(following.bare) and following.bare not in self._names.ambiguous \
                and self._caseless_name(token, first=False) \
                and not _ENUMERATION_NEXT.match(text, following.end):
            return i, i + 1, SCORE_LAST_FIRST  # "WELLER, Renato" as forms write it
        same_case = following.caseless and following.bare.isupper() == token.bare.isupper()
        if not same_case:
            return None
        if text[token.end:following.start].strip() == "," and self._caseless_name(token, first=False) \
                and self._caseless_name(following, first=True) \
                and not _ENUMERATION_NEXT.match(text, following.end):
            end = i + 1
            if i + 2 < len(tokens) and self._adjacent(text, following, tokens[i + 2]) \
                    and self._caseless_name(tokens[i + 2], first=True):
                end = i + 2  # "MÜLLER, ANNA MARIA"
            return i, end, SCORE_LAST_FIRST
        if self._adjacent(text, token, following) and self._caseless_name(token, first=True) \
                and self._caseless_name(following, first=False):
            return i, i + 1, SCORE_CASELESS_FULL
        return None

    def _greeting(self, text: str, tokens: list[_Token], i: int) -> tuple[int, int, float] | None:
        """ "Hallo Leokadia," / "Dear Swen Berg,": a greeting, a name, then a comma or line end."""
        first = tokens[i + 1]
        if not self._adjacent(text, tokens[i], first):
            return None
        if self._caseless_name(first, first=True):
            after = text[first.end:first.end + 1]
            return (i + 1, i + 1, SCORE_CASELESS_FULL) if after in (",", "!", "\n", "") else None
        if not self._usable(first):
            return None
        if first.bare in self._names.ambiguous or first.text.lower() in HONORIFICS:
            return None
        end = self._extend(text, tokens, i + 1, require_known=False)
        after = text[tokens[end].end:tokens[end].end + 2]
        if after[:1] in (",", "!", "\n") or after == "" or after.startswith(" \n"):
            return i + 1, end, SCORE_GREETING
        return None

    def _extend(self, text: str, tokens: list[_Token], i: int, *, require_known: bool) -> int:
        """Index of the last token of a name starting at ``i`` (``i`` when nothing follows).

        With ``require_known`` every further token must be a known first or last name;
        without, one trailing unknown capitalised word is accepted as the surname.
        """
        end = i
        j = i + 1
        particles = 0  # "von und zu" does not use up the name's word budget
        while j < len(tokens) and j - i - particles < _MAX_NAME_TOKENS:
            if not self._adjacent(text, tokens[j - 1], tokens[j]):
                break
            candidate = tokens[j]
            if self._particle(tokens, j):
                # "von der Leyen", "van den Berg": particles only count before a name
                k = j
                while k + 1 < len(tokens) and self._particle(tokens, k) \
                        and self._adjacent(text, tokens[k], tokens[k + 1]):
                    k += 1
                if k > j and tokens[k].capitalised and tokens[k].text.lower() not in PARTICLES:
                    particles += k - j
                    j = k
                    continue
                break
            if not self._usable(candidate):
                break
            word = candidate.bare
            if self._is_last(word) or self._is_first(word):
                end = j
                j += 1
                continue
            if not require_known and word not in self._names.ambiguous:
                end = j
            break
        return end

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type="PERSON",
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self.NAME, original_score=score, textual_explanation="name gazetteer"
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )
