"""The medical-context layer: ICD-10 and ATC codes plus German/English term lists.

Word-level lookups (set membership, ``str.startswith``/``endswith`` with tuples) instead of
one giant regex: German compounds (Lungen|krebs, Typ-2-|Diabetes) need prefix and suffix
matching, which a regex with leading ``\\w*`` would make slow through backtracking.
Multi-word and hyphenated terms go through one compiled regex per category.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_WORD: Final = re.compile(r"\w+", re.UNICODE)

# ICD-10 / ICD-10-GM: letter, two digits, optional subcode; GM suffixes (G, V, Z, A, L, R, B)
# and the dagger/asterisk system may follow. Without a subcode ("E10", "C64") the code is
# only taken near a diagnosis context word: bare three-character codes are fuel grades,
# product names and paper sizes far more often than diagnoses.
ICD10_CODE: Final = re.compile(r"(?<![\w.-])([A-Z])(\d{2})(?:\.(\d{1,2}|-))?(?:[!†*+#])?(?![\w-])")
ICD10_CONTEXT: Final = re.compile(
    r"(?i)\b(icd|icd-10|icd10|diagnos\w*|dx|befund\w*|kodier\w*|coded?|schlüssel)\b"
)
# ATC level 5 (N06AB06): specific enough alone. Level 4 (N06AB) needs the word "ATC".
ATC_LEVEL5: Final = re.compile(r"(?<![\w-])[ABCDGHJLMNPRSV]\d{2}[A-Z]{2}\d{2}(?![\w-])")
ATC_LEVEL4: Final = re.compile(r"(?<![\w-])[ABCDGHJLMNPRSV]\d{2}[A-Z]{2}(?![\w-])")
ATC_CONTEXT: Final = re.compile(r"(?i)\batc\b")
_CONTEXT_WINDOW: Final = 60


@dataclass(frozen=True, slots=True)
class MedicalMatch:
    category: str
    start: int
    end: int


@dataclass(slots=True)
class MedicalScan:
    matches: list[MedicalMatch] = field(default_factory=list)
    word_count: int = 0

    @property
    def categories(self) -> set[str]:
        return {m.category for m in self.matches}


@dataclass(slots=True)
class _CategoryTerms:
    exact: set[str] = field(default_factory=set)
    prefixes: list[str] = field(default_factory=list)  # "diabetes*"
    suffixes: list[str] = field(default_factory=list)  # "*krebs"
    infixes: list[str] = field(default_factory=list)  # "*karzinom*"
    phrases: list[str] = field(default_factory=list)  # regex fragments of multi-word terms


class _LanguageLexicon:
    def __init__(self, path: Path) -> None:
        by_category: dict[str, _CategoryTerms] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            category, term = line.split("\t")
            terms = by_category.setdefault(category, _CategoryTerms())
            term = term.strip().lower()
            core = term.strip("*")
            if re.search(r"[\s\-']", core):
                fragment = re.escape(core).replace(r"\ ", r"\s+")
                head = r"\w*" if term.startswith("*") else ""
                tail = r"\w*" if term.endswith("*") else ""
                terms.phrases.append(head + fragment + tail)
            elif term.startswith("*") and term.endswith("*"):
                terms.infixes.append(core)
            elif term.startswith("*"):
                terms.suffixes.append(core)
            elif term.endswith("*"):
                terms.prefixes.append(core)
            else:
                terms.exact.add(core)
        self._categories: list[tuple[str, frozenset[str], tuple[str, ...], tuple[str, ...],
                                     re.Pattern[str] | None, re.Pattern[str] | None]] = []
        for category, terms in by_category.items():
            phrase_re = (
                re.compile(r"(?<!\w)(?:" + "|".join(terms.phrases) + r")(?!\w)", re.IGNORECASE)
                if terms.phrases else None
            )
            # Infixes as one regex: a search in C instead of a Python loop per word.
            infix_re = re.compile("|".join(map(re.escape, terms.infixes))) if terms.infixes else None
            self._categories.append((
                category, frozenset(terms.exact), tuple(terms.prefixes), tuple(terms.suffixes),
                infix_re, phrase_re,
            ))

    def scan(self, text: str) -> tuple[list[MedicalMatch], int]:
        phrase_matches: list[MedicalMatch] = []
        for phrase_category, _, _, _, _, phrase_re in self._categories:
            if phrase_re is not None:
                phrase_matches.extend(
                    MedicalMatch(phrase_category, m.start(), m.end()) for m in phrase_re.finditer(text)
                )
        covered = [(m.start, m.end) for m in phrase_matches]
        matches = list(phrase_matches)
        words = 0
        for word_match in _WORD.finditer(text):
            words += 1
            word = word_match.group().lower()
            if len(word) < 3 or word.isdigit():
                continue
            category = self._word_category(word)
            if category is None:
                continue
            start, end = word_match.span()
            if any(s <= start < e for s, e in covered):
                continue
            matches.append(MedicalMatch(category, start, end))
        return matches, words

    def _word_category(self, word: str) -> str | None:
        for category, exact, prefixes, suffixes, infixes, _ in self._categories:
            if (
                word in exact
                or (prefixes and word.startswith(prefixes))
                or (suffixes and word.endswith(suffixes))
                or (infixes is not None and infixes.search(word) is not None)
            ):
                return category
        return None


class MedicalLexicon:
    """Loaded once from ``data/medical``; ``scan`` is pure and thread-safe."""

    def __init__(self, directory: Path, languages: list[str]) -> None:
        self._icd_categories = frozenset(
            line.strip()
            for line in (directory / "icd10_categories.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
        self._lexicons = {
            lang: _LanguageLexicon(directory / f"terms_{lang}.tsv")
            for lang in languages
            if (directory / f"terms_{lang}.tsv").exists()
        }

    def scan(
        self, text: str, language: str, exclude: Sequence[tuple[int, int]] = ()
    ) -> MedicalScan:
        """Medical terms of ``text``; matches inside ``exclude`` spans (detected names,
        e-mail addresses) do not count: "Frau Krebs" and "l.krebs@…" are not oncology."""
        lexicon = self._lexicons.get(language)
        if lexicon is None:
            return MedicalScan(word_count=len(_WORD.findall(text)))
        matches, words = lexicon.scan(text)
        matches.extend(self._codes(text))
        if exclude:
            matches = [m for m in matches if not any(m.start < e and s < m.end for s, e in exclude)]
        return MedicalScan(matches=matches, word_count=words)

    def _codes(self, text: str) -> Iterator[MedicalMatch]:
        for m in ICD10_CODE.finditer(text):
            if m.group(1) + m.group(2) not in self._icd_categories:
                continue
            if m.group(3) is None and not _near(ICD10_CONTEXT, text, m.start()):
                continue
            yield MedicalMatch("icd10", m.start(), m.end())
        for m in ATC_LEVEL5.finditer(text):
            yield MedicalMatch("atc", m.start(), m.end())
        for m in ATC_LEVEL4.finditer(text):
            if _near(ATC_CONTEXT, text, m.start()):
                yield MedicalMatch("atc", m.start(), m.end())


def _near(context: re.Pattern[str], text: str, position: int) -> bool:
    return context.search(text, max(0, position - _CONTEXT_WINDOW), position) is not None
