"""Normalisation before recognition, with every offset mapped back to the original text.

Recognizers see a normalised copy of each text; findings are mapped back, so redaction,
the allowlist and the medical layer work on the original. Three steps:

* Unicode NFKC (fullwidth digits and ``＠``, ligatures, no-break and thin spaces), plus what
  NFKC leaves alone but people and OCR produce: zero-width characters and soft hyphens are
  dropped, typographic dashes become ``-``, typographic apostrophes ``'``.
* E-mail de-obfuscation: ``erika (at) example (punkt) org``, ``jane [at] mail [dot] com``,
  ``j.doe @ example . com`` become one address. A bare spaced ``at``/``ät`` ("look at
  example.com", "arrived at 10.30") only counts when the local part looks like an address
  (a dot, digit, ``_``/``-``) or a dot is obfuscated too — ``at`` in a sentence stays a word.
* Nothing else: case is not folded here (capitalisation is evidence for names; the name
  gazetteer folds case itself where it must), and separators inside identifiers are handled
  by the identifier recognizers, which validate the compacted value with its checksum.

Texts that need none of this (the common case: NFKC-clean, no obfuscated address) are
returned as they are, without an offset table.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from spacy.lang.de.stop_words import STOP_WORDS as GERMAN_STOP_WORDS
from spacy.lang.en.stop_words import STOP_WORDS as ENGLISH_STOP_WORDS

# Not touched by NFKC, but invisible (zero-width) or typographic variants of ASCII.
_DROP: Final = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
_REPLACE: Final = {
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    **dict.fromkeys("\u2018\u2019\u201b\u02bc\u00b4\u0060", "'"),
}
_SPECIAL: Final = re.compile("[" + "".join(sorted(_DROP | set(_REPLACE))) + "]")

_OPEN: Final = r"[(\[{<]"
_CLOSE: Final = r"[)\]}>]"
_AT_BRACKETED: Final = rf"\s*{_OPEN}\s*(?:at|ät|@)\s*{_CLOSE}\s*"
_AT_BARE: Final = r"\s+(?:at|ät)\s+"
_AT_SPACED: Final = r"\s+@\s*|\s*@\s+"
_DOT_OBFUSCATED: Final = rf"\s*{_OPEN}\s*(?:dot|punkt|\.)\s*{_CLOSE}\s*|\s+(?:dot|punkt)\s+|\s+\.\s+"
_DOT: Final = rf"(?:{_DOT_OBFUSCATED}|\.)"
_LOCAL_WORD: Final = r"[a-z0-9_%+-]+"
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Found from the "at" outwards: the local part must end right before it, the domain start
# right after it. Anchoring on the rare "at" keeps this cheap on ordinary text.
_AT: Final = re.compile(rf"{_AT_BRACKETED}|{_AT_SPACED}|{_AT_BARE}", re.IGNORECASE)
_LOCAL_BEFORE: Final = re.compile(
    rf"(?<![\w.@]){_LOCAL_WORD}(?:{_DOT}{_LOCAL_WORD})*\Z", re.IGNORECASE
)
_DOMAIN_AFTER: Final = re.compile(
    rf"{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}[a-z]{{2,24}}(?![\w@])", re.IGNORECASE
)
_LOCAL_WINDOW: Final = 96


@dataclass(frozen=True, slots=True)
class _Candidate:
    start: int
    end: int
    local: str
    at: str
    domain: str


_OBFUSCATED_DOT: Final = re.compile(_DOT_OBFUSCATED, re.IGNORECASE)
_MAYBE_OBFUSCATED: Final = re.compile(r"\s@|@\s|[(\[{<]\s*@|\b(?:at|ät)\b", re.IGNORECASE)
_ADDRESS_LIKE_LOCAL: Final = re.compile(r"[._\d-]")
# "I am at home dot com": a function word before a bare "at" is a sentence, not a mailbox.
_FUNCTION_WORDS: Final = frozenset(GERMAN_STOP_WORDS | ENGLISH_STOP_WORDS)


@dataclass(frozen=True, slots=True)
class Normalized:
    """The normalised text and, when it differs, where each of its characters came from."""

    text: str
    # starts[i], ends[i]: the original range that produced normalised character i.
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if self.starts is None or self.ends is None or end <= start:
            return start, end
        return self.starts[start], self.ends[end - 1]


class _Builder:
    """Collects output pieces with the source range each came from."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []

    def keep(self, text: str, start: int, end: int, source: Normalized) -> None:
        # Copy text[start:end] of an earlier layer, composing its offsets.
        self.parts.append(text[start:end])
        for i in range(start, end):
            s, e = source.original_span(i, i + 1)
            self.starts.append(s)
            self.ends.append(e)

    def replace(self, out: str, start: int, end: int) -> None:
        self.parts.append(out)
        self.starts.extend([start] * len(out))
        self.ends.extend([end] * len(out))

    def build(self) -> Normalized:
        return Normalized("".join(self.parts), tuple(self.starts), tuple(self.ends))


def _unicode(text: str) -> Normalized:
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not _SPECIAL.search(text)):
        return Normalized(text)
    builder = _Builder()
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        # A base character and its combining marks normalise together ("a" + U+0308 → "ä").
        while j < n and unicodedata.combining(text[j]):
            j += 1
        cluster = text[i:j]
        if cluster in _DROP:
            pass
        elif cluster in _REPLACE:
            builder.replace(_REPLACE[cluster], i, j)
        else:
            out = unicodedata.normalize("NFKC", cluster)
            builder.replace(out, i, j)
        i = j
    return builder.build()


def _is_obfuscated_address(candidate: _Candidate) -> bool:
    at = candidate.at.strip().lower()
    if at not in ("at", "ät"):
        return True  # bracketed (at), [ät], {@} or a spaced @: written to dodge a filter
    # A bare spaced "at": only with an address-like local part or another obfuscated dot.
    if candidate.local.lower() in _FUNCTION_WORDS:
        return False
    return bool(_ADDRESS_LIKE_LOCAL.search(candidate.local)) or bool(
        _OBFUSCATED_DOT.search(candidate.local + " " + candidate.domain)
    )


def _candidates(text: str) -> list[_Candidate]:
    found: list[_Candidate] = []
    for at in _AT.finditer(text):
        if found and at.start() < found[-1].end:
            continue
        local = _LOCAL_BEFORE.search(text, max(0, at.start() - _LOCAL_WINDOW), at.start())
        domain = _DOMAIN_AFTER.match(text, at.end())
        if local is None or domain is None:
            continue
        candidate = _Candidate(local.start(), domain.end(), local.group(), at.group(), domain.group())
        if _is_obfuscated_address(candidate):
            found.append(candidate)
    return found


def _rejoin(part: str) -> str:
    return _OBFUSCATED_DOT.sub(".", part).replace(" ", "")


def _emails(layer: Normalized) -> Normalized:
    text = layer.text
    if not _MAYBE_OBFUSCATED.search(text):
        return layer
    candidates = _candidates(text)
    if not candidates:
        return layer
    builder = _Builder()
    cursor = 0
    for candidate in candidates:
        builder.keep(text, cursor, candidate.start, layer)
        address = _rejoin(candidate.local) + "@" + _rejoin(candidate.domain)
        start, _ = layer.original_span(candidate.start, candidate.start + 1)
        _, end = layer.original_span(candidate.end - 1, candidate.end)
        builder.replace(address, start, end)
        cursor = candidate.end
    builder.keep(text, cursor, len(text), layer)
    return builder.build()


def normalize(text: str) -> Normalized:
    return _emails(_unicode(text))
