"""Screening a streamed answer with a sliding window (issue 12): release only text that can no
longer become part of a detection. Pure and synchronous; the transport is ``streaming.py``.

``StreamScreen.feed(delta)`` takes the model's text as it arrives, ``finish()`` ends it; both
return a ``Release``: the text that may go to the caller now (redacted as the decision in force
says, pseudonyms restored), whether the stream is blocked, and the latest decision.

The raw text not yet released waits in a buffer. A screening covers that text plus up to
``context_chars`` of already released text on the left (context words before a value still
raise its score, and a value is never re-released), and chooses a cut; everything before the
cut is released. The cut

* lies before the earliest position where a detection may still be growing into the text not
  yet received (``GrowthModel``, ``growth_for``: partial matches of the recognizers' patterns
  reaching the end, the trailing run of words that may still be a name, restored pseudonyms),
  and never more than ``hold_back`` characters before the end: a value that contains
  whitespace (an IBAN in groups, a phone number, a name, an address) is at most that long, so
  it has arrived completely — and is detected — before any part of it could be released.
  ``hold_back`` is derived from the recognizers (``hold_back_for``); without a growth model
  the cut lies exactly ``hold_back`` before the end;
* lies after whitespace, never inside a run of non-whitespace characters: an e-mail address,
  an IBAN or an ID written without spaces is never cut, however long and however chunked;
* never lies inside a detected value or a medical term: the cut moves to its start.

The decision is taken on everything seen so far: the findings, medical terms and words of the
released text (counted once, when released) plus those of the unreleased tail, aggregated as
``DlpGuard.screen`` aggregates them over one text. Once it says block, nothing more is ever
released. At ``finish()`` the decision covers the whole answer.

Cost: the first screening runs at the first whitespace, the next after 8, 16, 32, …
(``first_step`` doubling) new characters, then every ``screen_every`` (and at the end); it is
skipped while nothing could be released anyway. docs/dlp.md (Streaming) has the numbers.

Nothing here logs, and no exception message carries text.
"""

from __future__ import annotations

import re
import warnings
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import regex

from schemas.events import DlpDecision, EntityCount
from services.dlp.guard import DlpGuard, Finding, PolicyContext
from services.dlp.medical import MedicalMatch, MedicalScan
from services.dlp.normalize import (
    _AT_BARE,
    _AT_BRACKETED,
    _AT_SPACED,
    _DOT,
    _LABEL,
    _LOCAL_WORD,
    normalize,
)
from services.dlp.recognizers.identifiers import ocr_view
from services.dlp.recognizers.person import _ABBREVIATIONS as ABBREVIATIONS
from services.dlp.recognizers.person import _TITLES as TITLES
from services.dlp.recognizers.person import (
    GREETINGS,
    HONORIFICS,
    PARTICLES,
    NameLists,
    PersonGazetteerRecognizer,
    fold,
)
from services.dlp.redaction import PSEUDONYM, restore_pseudonyms

__all__ = [
    "CONTEXT_CHARS",
    "DECLARED_EXTENTS",
    "SCREEN_EVERY",
    "Extent",
    "Growth",
    "GrowthModel",
    "GuardScreener",
    "Release",
    "Screener",
    "StreamScreen",
    "Tally",
    "WindowScan",
    "growth_for",
    "hold_back_for",
    "recognizer_extents",
]

# Left context of every screening: Presidio's context enhancer reads the 5 words before a
# value, the medical layer looks 60 characters back for "ICD"/"Diagnose", the phone recognizer
# 30 for "Bestellnr.". Extended to the start of the word it falls into.
CONTEXT_CHARS: Final = 64
SCREEN_EVERY: Final = 128  # cost vs. granularity: docs/dlp.md (Streaming)
FIRST_STEP: Final = 8  # the cadence's ramp after the first screening: 8, 16, 32, … characters

# Recognizers whose values may contain whitespace and whose length no regex bounds (code, not
# a pattern, or an unbounded repetition). The bound each is held to, in characters:
DECLARED_EXTENTS: Final[Mapping[str, tuple[int, str]]] = {
    "PERSON": (80, "honorific + title chain + at most 4 name tokens (person._MAX_NAME_TOKENS) "
                   "+ particles, e.g. 'Herr Prof. Dr. med. Anna-Lena von und zu Hohenberg'"),
    "STREET_ADDRESS": (96, "street + number + postcode + city ('Kaiser-Friedrich-Wilhelm-Straße "
                           "123a, 12345 Frankfurt am Main' is 62)"),
    "EMAIL_ADDRESS": (96, "written out with spaces: 'erika (at) example (punkt) org' "
                          "(normalize looks 96 characters back for the local part)"),
    "DE_HANDELSREGISTER": (24, "'HRB 123456 B' with spaces"),
}

_WORD: Final = re.compile(r"\w+")  # the medical layer's word count (medical._WORD)


# -- what a stream releases ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    """What may go to the caller now. ``repr`` shows lengths, never text."""

    text: str = field(repr=False)
    blocked: bool = False
    decision: DlpDecision | None = None


@dataclass(frozen=True, slots=True)
class WindowScan:
    """Findings and medical terms of one screened text (offsets into it) and its language."""

    findings: list[Finding]
    medical: list[MedicalMatch]
    language: str


@dataclass(slots=True)
class Tally:
    """Everything the policy decides on, aggregated over the answer so far."""

    findings: list[Finding] = field(default_factory=list)
    medical: list[MedicalMatch] = field(default_factory=list)
    words: int = 0
    placeholders: set[str] = field(default_factory=set, repr=False)
    language_chars: Counter[str] = field(default_factory=Counter)

    def plus(self, other: Tally) -> Tally:
        return Tally(
            findings=[*self.findings, *other.findings],
            medical=[*self.medical, *other.medical],
            words=self.words + other.words,
            placeholders=self.placeholders | other.placeholders,
            language_chars=self.language_chars + other.language_chars,
        )


class Screener(Protocol):
    """The three things the window needs from the DLP guard."""

    def scan(self, text: str) -> WindowScan: ...

    def decide(self, tally: Tally) -> DlpDecision: ...

    def redact(self, text: str, findings: Sequence[Finding]) -> str: ...


# -- the window ---------------------------------------------------------------------------


class StreamScreen:
    def __init__(
        self,
        screener: Screener,
        *,
        hold_back: int,
        pseudonyms: Mapping[str, str] | None = None,
        context_chars: int = CONTEXT_CHARS,
        screen_every: int = SCREEN_EVERY,
        growth: Growth | None = None,
        first_step: int = FIRST_STEP,
    ) -> None:
        if hold_back < 0 or context_chars < 0 or screen_every < 1 or first_step < 1:
            raise ValueError("hold_back and context_chars must be >= 0, screen_every and first_step >= 1")
        self._screener = screener
        self._growth = growth
        # The cadence ramps up: the first screening as soon as a word is complete, then after
        # first_step, 2 × first_step, … new characters, up to screen_every (see _step).
        self._first_step = first_step
        self._steps = 0
        self._space_at = -1  # absolute offset of the last whitespace character received
        self._pseudonyms = dict(pseudonyms or {})
        self.hold_back = hold_back
        self._context_chars = context_chars
        self._screen_every = screen_every
        self._buf = ""  # raw text from absolute offset _base on (older text is not needed)
        self._base = 0
        self._incoming: list[str] = []
        self._length = 0  # raw characters received
        self._released = 0  # raw characters released (absolute offset of the first unreleased)
        self._screened_at = 0
        self._committed = Tally()  # of the released text
        self._blocked = False
        self._finished = False
        self.decision: DlpDecision | None = None
        self.screenings = 0  # how many times the screener ran (for the cost measurement)
        self.screened_chars = 0
        self.growth_checks = 0

    @classmethod
    def for_guard(
        cls,
        guard: DlpGuard,
        context: PolicyContext,
        pseudonyms: Mapping[str, str] | None = None,
        *,
        context_chars: int = CONTEXT_CHARS,
        screen_every: int = SCREEN_EVERY,
        growth: bool = True,
    ) -> StreamScreen:
        """``growth=False``: the fixed hold-back only (the cut ``hold_back`` before the end)."""
        return cls(
            GuardScreener(guard, context),
            hold_back=hold_back_for(guard),
            pseudonyms=pseudonyms,
            context_chars=context_chars,
            screen_every=screen_every,
            growth=growth_for(guard) if growth else None,
        )

    @property
    def blocked(self) -> bool:
        return self._blocked

    def feed(self, delta: str) -> Release:
        if self._finished:
            raise RuntimeError("stream already finished")
        if self._blocked:
            return Release("", blocked=True, decision=self.decision)
        if delta:
            self._incoming.append(delta)
            space = _last_space(delta)
            if space >= 0:
                self._space_at = self._length + space
            self._length += len(delta)
        if self._length - self._screened_at < self._step():
            return Release("", decision=self.decision)
        if self._growth is None:
            if self._length - self.hold_back <= self._released:
                return Release("", decision=self.decision)  # nothing could be released yet
        elif self._space_at < self._released:
            return Release("", decision=self.decision)  # no cut possible: no whitespace since
        return self._screen(final=False)

    def _step(self) -> int:
        """New characters before the next screening: with a growth model the first screening
        runs at the first whitespace (a word is complete), then after 8, 16, 32, …
        (``first_step`` doubling) up to ``screen_every`` — the first release is not delayed by
        the cadence, the cost stays ~``log2(screen_every / first_step)`` extra screenings."""
        if self._growth is None:
            return self._screen_every
        if self._steps == 0:
            return 1
        return min(self._screen_every, self._first_step << (self._steps - 1))

    def finish(self) -> Release:
        if self._finished:
            raise RuntimeError("stream already finished")
        self._finished = True
        if self._blocked:
            return Release("", blocked=True, decision=self.decision)
        return self._screen(final=True)

    # -- internals ----------------------------------------------------------------------

    def _screen(self, *, final: bool) -> Release:
        if self._incoming:
            self._buf += "".join(self._incoming)
            self._incoming.clear()
        self._screened_at = self._length
        self._steps += 1
        released, end = self._released, self._length
        if released == end:  # nothing unreleased (only at finish): decide on what was released
            return self._decided(self._committed)
        start = self._context_start()
        window = self._at(start, end)
        self.screenings += 1
        self.screened_chars += len(window)
        scan = self._screener.scan(window)
        findings = [_shift(f, start) for f in scan.findings if f.end + start > released]
        medical = [
            MedicalMatch(m.category, m.start + start, m.end + start)
            for m in scan.medical
            if m.end + start > released
        ]
        pending = self._tally(findings, medical, released, end, scan.language)
        release = self._decided(self._committed.plus(pending))
        if release.blocked:
            return release
        spans = [(f.start, f.end) for f in findings] + [(m.start, m.end) for m in medical]
        cut = end if final else self._cut(self._limit(window, start, released, end), spans)
        if cut <= released:
            return release
        piece = self._at(released, cut)
        inside = [f for f in findings if f.start < cut]
        if self.decision is not None and self.decision.action != "allow" and inside:
            piece = self._screener.redact(
                piece,
                [Finding(f.type, max(f.start, released) - released, f.end - released, f.score, 0)
                 for f in inside],
            )
        self._committed = self._committed.plus(
            self._tally(inside, [m for m in medical if m.start < cut], released, cut, scan.language)
        )
        self._released = cut
        self._trim()
        if self._pseudonyms:
            piece = restore_pseudonyms(piece, self._pseudonyms)
        return Release(piece, decision=self.decision)

    def _limit(self, window: str, start: int, released: int, end: int) -> int:
        """The latest cut the hold-back allows: ``hold_back`` before the end, or — with a
        growth model — the earliest position where a value may still be growing into the
        text not yet received, never earlier than ``end - hold_back``."""
        fixed = end - self.hold_back
        if self._growth is None:
            return fixed
        self.growth_checks += 1
        limit = start + self._growth.hold_from(window, released - start)
        if self._pseudonyms:
            # A placeholder goes out restored — the value itself. It is held as long as the
            # fixed hold-back would hold it: a medical term close behind it still blocks the
            # answer before the name is out (as screening the whole answer would).
            for placeholder in PSEUDONYM.finditer(window, max(0, released - start)):
                if start + placeholder.start() >= fixed:
                    limit = min(limit, start + placeholder.start())
                    break
        return max(fixed, limit)

    def _decided(self, tally: Tally) -> Release:
        self.decision = self._screener.decide(tally)
        if self.decision.action == "block":
            self._blocked = True
            return Release("", blocked=True, decision=self.decision)
        return Release("", decision=self.decision)

    def _tally(
        self, findings: list[Finding], medical: list[MedicalMatch], start: int, end: int, language: str
    ) -> Tally:
        text = self._at(start, end)
        return Tally(
            findings=findings,
            medical=medical,
            words=sum(1 for _ in _WORD.finditer(text)),
            placeholders={m.group(0) for m in PSEUDONYM.finditer(text)},
            language_chars=Counter({language: len(text)}),
        )

    def _context_start(self) -> int:
        """Up to ``context_chars`` back from the first unreleased character, moved back to the
        start of the word it falls into (a screening never starts inside a word)."""
        start = max(self._base, self._released - self._context_chars)
        while start > self._base and not self._buf[start - 1 - self._base].isspace():
            start -= 1
        return start

    def _cut(self, limit: int, spans: Sequence[tuple[int, int]]) -> int:
        cut, released = limit, self._released
        while True:
            while cut > released and not self._buf[cut - 1 - self._base].isspace():
                cut -= 1  # after whitespace: never inside a run of non-space characters
            if cut <= released:
                return released
            inside = [s for s, e in spans if s < cut < e]
            if not inside:
                return cut
            cut = min(inside)

    def _at(self, start: int, end: int) -> str:
        return self._buf[start - self._base : end - self._base]

    def _trim(self) -> None:
        """Drop raw text no later screening can need (left of the next context)."""
        keep = self._context_start()
        if keep > self._base:
            self._buf = self._buf[keep - self._base :]
            self._base = keep


def _last_space(text: str) -> int:
    for i in range(len(text) - 1, -1, -1):
        if text[i].isspace():
            return i
    return -1


def _shift(finding: Finding, offset: int) -> Finding:
    return Finding(finding.type, finding.start + offset, finding.end + offset, finding.score, 0)


# -- the adapter to DlpGuard --------------------------------------------------------------


class GuardScreener:
    """``Screener`` on a ``DlpGuard``: detection through the public ``screen`` (so it follows
    every change to normalisation and recognition), the decision over a ``Tally`` through the
    guard's own feature aggregation and policy (read-only use of ``_features``, ``_policy``
    and ``_medical``: DlpGuard has no public method for a decision on pre-computed findings)."""

    def __init__(self, guard: DlpGuard, context: PolicyContext) -> None:
        self._guard = guard
        self._context = context

    def scan(self, text: str) -> WindowScan:
        screening = self._guard.screen([text], direction="output", context=self._context)
        language = screening.languages[0] if screening.languages else self._guard.config.default_language
        findings = list(screening.findings)
        # screen() scans medical terms too but returns only their categories: the window
        # needs their positions (count them once, never cut inside one).
        medical = self._guard._medical.scan(text, language, [(f.start, f.end) for f in findings])
        return WindowScan(findings, medical.matches, language)

    def decide(self, tally: Tally) -> DlpDecision:
        guard = self._guard
        scan = MedicalScan(matches=list(tally.medical), word_count=tally.words)
        # _features reads the texts only for pseudonym placeholders (<PERSON_1>).
        features = guard._features(
            [" ".join(sorted(tally.placeholders))], tally.findings, [scan], "output", self._context
        )
        decision = guard._policy.decide(features)
        counts = Counter(f.type for f in tally.findings)
        language = (
            tally.language_chars.most_common(1)[0][0]
            if tally.language_chars
            else guard.config.default_language
        )
        return DlpDecision(
            direction="output",
            action=decision.action,
            rule_id=decision.rule_id,
            policy_version=decision.policy_version,
            language=language,
            derived_sensitivity=decision.derived_sensitivity,
            has_pii=features.has_pii,
            has_medical_terms=features.has_medical_terms,
            medical_term_density=features.medical_term_density,
            entities=[EntityCount(type=t, count=n) for t, n in sorted(counts.items())],
        )

    def redact(self, text: str, findings: Sequence[Finding]) -> str:
        return self._guard.redact_findings(text, findings)


# -- where a value may still be growing -------------------------------------------------


class Growth(Protocol):
    def hold_from(self, text: str, lo: int) -> int:
        """The earliest position at or after ``lo`` where a detection may still be growing
        into text not yet received (``len(text)`` or the start of the trailing run of
        non-space characters when none may)."""
        ...


@dataclass(frozen=True, slots=True)
class _Partial:
    regex: regex.Pattern[str]
    reach: int  # how far before the end a match that reaches the end may start


_TOKEN_RUN: Final = re.compile(r"\S+")
_CLOSERS: Final = ".!?;:"
_PUNCT: Final = ".,;:!?()[]{}<>\"'«»„“”‚‘’*_/|"
# Words that may stand inside a name or before it (honorifics, titles, particles: "Herr Prof.
# Dr. med. von und zu Hohenberg"), in any case.
_NAME_JOINERS: Final = frozenset(
    w.rstrip(".") for w in HONORIFICS | TITLES | PARTICLES | {"und", "and"}
)


class GrowthModel:
    """Where a value may still be growing, from the configured recognizers (``growth_for``):

    * every pattern that can match whitespace or looks ahead (Presidio patterns, identifiers,
      phone, address, date, Handelsregister …, the obfuscated e-mail form the normaliser
      rejoins, multi-word medical terms): the earliest start of a match that reaches the end
      of the text received so far — ``regex`` partial matching (``fullmatch(text, p,
      partial=True)``: the text from ``p`` is a match or the prefix of one), on the
      normalised text and its OCR view (a trailing ``O``/``l`` counts as the digit it may
      turn into);
    * names (the gazetteer recognizer; case is weak evidence, German capitalises every noun):
      the start of the trailing run of words that could still be part of a name —
      capitalised or all-caps words, honorifics, titles, particles, and lower-case words that
      are known names — cut at a sentence end ("Weber. ") that no name crosses;
    * recognizers this model does not understand (code without patterns, e.g. spaCy NER when
      switched on): a fixed hold-back of their declared extent.

    Each source looks back at most its reach (a pattern's maximum width, or the declared
    extent); the window never holds back more than ``hold_back``.
    """

    def __init__(self, partials: Sequence[_Partial], names: NameLists | None, name_reach: int,
                 fixed: int) -> None:
        self.partials = list(partials)
        self._names = names
        self._name_reach = name_reach
        self.fixed = fixed

    def hold_from(self, text: str, lo: int) -> int:
        end = len(text)
        hold = max(lo, end - self.fixed) if self.fixed else end
        last_space = _last_space(text)
        boundary = last_space + 1  # a cut never goes beyond the last whitespace
        if boundary <= lo:
            return lo  # no whitespace after lo: nothing could be cut anyway
        hold = min(hold, boundary)
        normalized = normalize(text)
        views: list[tuple[str, tuple[int, ...] | None]] = [(normalized.text, normalized.starts)]
        if normalized.starts is not None:
            views.append((text, None))
        if any(ch.isdigit() for ch in normalized.text):
            ocr = ocr_view(normalized.text + "0")[:-1]  # a trailing "O" may yet be a digit
            if ocr != normalized.text:
                views.append((ocr, normalized.starts))
        for view, starts in views:
            n = len(view)
            vlo = lo if starts is None else bisect_left(starts, lo)
            vhold = _to_view(hold, starts, n)
            for partial in self.partials:
                vhold = min(vhold, _earliest_partial(partial, view, max(vlo, n - partial.reach), vhold))
            if self._names is not None:
                vhold = min(vhold, max(self._name_run(view, vlo), n - self._name_reach))
            hold = min(hold, vhold if starts is None or vhold >= n else starts[vhold])
        return max(hold, lo)

    def _name_run(self, text: str, lo: int) -> int:
        """Start of the trailing run of words that may still belong to a name growing into
        the text not yet received (``len(text)`` if none): the run of name-like words at the
        end, from its first word that may open a name ("Hallo", "Die" may not)."""
        tokens = list(_TOKEN_RUN.finditer(text, lo))
        start = len(text)
        complete = bool(text) and text[-1].isspace()
        for index in range(len(tokens) - 1, -1, -1):
            token = tokens[index].group()
            if index == len(tokens) - 1 and not complete:
                start = tokens[index].start()  # still arriving: may become anything
                continue
            if index < len(tokens) - 1 and token[-1] in _CLOSERS and not _abbreviation(token):
                break  # "Weber. Danke": no name runs across a sentence end
            if not self._name_like(token):
                break
            if self._may_open(token):
                start = tokens[index].start()
        return start

    def _name_like(self, token: str) -> bool:
        if "@" in token or any(ch.isdigit() for ch in token):
            return False
        core = token.strip(_PUNCT)
        if not core:
            return True  # "&", "-": may join
        if any(ch.isupper() for ch in core):
            return True
        lowered = core.lower()
        if lowered.rstrip(".") in _NAME_JOINERS:
            return True
        names = self._names
        assert names is not None
        folded = [fold(part) for part in re.split(r"[^\w']+", lowered) if part]
        # as the recognizer reads lower case: a known name and no common word ("mich", "bei")
        return any(
            (f in names.first_folded or f in names.last_folded) and f not in names.not_folded
            for f in folded
        )

    def _may_open(self, token: str) -> bool:
        core = token.strip(_PUNCT)
        names = self._names
        assert names is not None
        return core.lower() not in GREETINGS and core not in names.function_words


def _abbreviation(token: str) -> bool:
    """ "Dr.", "Prof.", "h.c.": a period that ends no sentence."""
    words = token.lower().strip(_PUNCT.replace(".", "")).split(".")
    return all(w + "." in ABBREVIATIONS for w in words[:-1] if w) and not words[-1]


def _to_view(position: int, starts: tuple[int, ...] | None, n: int) -> int:
    if starts is None:
        return position
    return min(n, bisect_left(starts, position))


def _earliest_partial(partial: _Partial, text: str, pos: int, before: int) -> int:
    """The earliest ``p`` in ``[pos, before)`` where a match of the pattern starting at ``p``
    reaches the end of ``text`` (complete there, or a prefix of a longer match), else
    ``before``. ``search(partial=True)`` finds the candidates (positions where anything
    matches), ``fullmatch(partial=True)`` decides."""
    compiled, n = partial.regex, len(text)
    while pos < before:
        found = compiled.search(text, pos, n, partial=True)
        if found is None or found.start() >= before:
            return before
        p = found.start()
        if found.partial or compiled.fullmatch(text, p, n, partial=True) is not None:
            return p
        pos = p + 1
    return before


_growths: weakref.WeakKeyDictionary[object, GrowthModel] = weakref.WeakKeyDictionary()


def growth_for(guard: DlpGuard) -> GrowthModel:
    """The growth model of the guard's recognizers (cached per detector, like the hold-back)."""
    detector = guard._detector
    cached = _growths.get(detector)
    if cached is None:
        cached = _build_growth(guard)
        _growths[detector] = cached
    return cached


_EMAIL_SPELLED_OUT: Final = (
    rf"(?<![\w.@]){_LOCAL_WORD}(?:{_DOT}{_LOCAL_WORD})*(?:{_AT_BRACKETED}|{_AT_SPACED}|{_AT_BARE})"
    rf"{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}[a-z]{{2,24}}(?![\w@])"
)


def _build_growth(guard: DlpGuard) -> GrowthModel:
    hold_back = hold_back_for(guard)
    detector = guard._detector
    seen: set[tuple[str, int]] = set()
    partials: list[_Partial] = []
    names: NameLists | None = None
    fixed = 0

    def add(pattern: str, flags: int) -> bool:
        if (pattern, flags) in seen:
            return True
        seen.add((pattern, flags))
        width = _whitespace_width(pattern)
        if width == 0 and "(?=" not in pattern:
            return True  # never spans whitespace: the cut rule alone keeps it whole
        try:
            compiled = regex.compile(pattern, flags & _REGEX_FLAGS)
        except Exception:  # noqa: BLE001 - a dialect difference: fall back to the fixed hold-back
            return False
        reach = hold_back if width in (0, None) else min(hold_back, width)
        partials.append(_Partial(compiled, reach))
        return True

    for recognizers in detector._recognizers.values():
        for recognizer in recognizers:
            if isinstance(recognizer, PersonGazetteerRecognizer):
                names = recognizer._names
                continue
            specs = list(_pattern_flags(recognizer))
            if not specs:
                fixed = max(fixed, _declared(recognizer.supported_entities, hold_back))
                continue
            if not all([add(pattern, flags) for pattern, flags in specs]):
                fixed = max(fixed, _declared(recognizer.supported_entities, hold_back))
    add(_EMAIL_SPELLED_OUT, re.IGNORECASE)
    for lexicon in guard._medical._lexicons.values():
        for *_, phrases in lexicon._categories:
            if phrases is not None:
                add(phrases.pattern, phrases.flags)
    return GrowthModel(partials, names, DECLARED_EXTENTS["PERSON"][0], min(fixed, hold_back))


_REGEX_FLAGS: Final = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE | re.ASCII | re.UNICODE


def _declared(entities: Iterable[str], fallback: int) -> int:
    return max((DECLARED_EXTENTS[e][0] if e in DECLARED_EXTENTS else fallback for e in entities),
               default=fallback)


def _pattern_flags(recognizer: object) -> Iterable[tuple[str, int]]:
    flags = getattr(recognizer, "global_regex_flags", None)
    for pattern in getattr(recognizer, "patterns", None) or []:  # Presidio PatternRecognizer
        yield str(pattern.regex), int(flags if flags is not None else re.DOTALL | re.MULTILINE | re.IGNORECASE)
    for pattern in getattr(recognizer, "_patterns", None) or []:  # IdentifierRecognizer
        yield str(pattern.regex.pattern), int(pattern.regex.flags)


# -- the hold-back, from the recognizers --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Extent:
    """The longest value an entity's recognizers can match that may contain whitespace
    (``None``: unbounded), and which pattern or declaration says so."""

    entity: str
    chars: int | None
    source: str


def recognizer_extents(guard: DlpGuard) -> list[Extent]:
    """Per entity, the longest whitespace-containing match of its configured patterns (from
    the regexes: ``sre_parse`` width), plus ``DECLARED_EXTENTS`` for code recognizers and
    unbounded patterns. Patterns that cannot match whitespace are left out: the window never
    cuts inside a run of non-space characters, whatever its length."""
    detector = guard._detector
    out: dict[str, Extent] = {}
    for recognizers in detector._recognizers.values():
        for recognizer in recognizers:
            for name, pattern in _patterns(recognizer):
                width = _whitespace_width(pattern)
                if width == 0:
                    continue
                for entity in recognizer.supported_entities:
                    known = out.get(entity)
                    if known is None or (known.chars is not None and (width is None or width > known.chars)):
                        out[entity] = Extent(entity, width, name)
    for entity, (chars, reason) in DECLARED_EXTENTS.items():
        known = out.get(entity)
        if known is None or known.chars is None or chars > known.chars:
            out[entity] = Extent(entity, chars, f"declared: {reason}")
    return sorted(out.values(), key=lambda e: (-(e.chars or 0), e.entity))


_hold_backs: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()


def hold_back_for(guard: DlpGuard) -> int:
    """The longest value with whitespace any configured recognizer can match (cached per
    detector: a reload with new org identifiers recomputes it). An unbounded pattern without a
    declaration counts as ``max(DECLARED_EXTENTS)``."""
    detector = guard._detector
    cached = _hold_backs.get(detector)
    if cached is None:
        fallback = max(chars for chars, _ in DECLARED_EXTENTS.values())
        cached = max((e.chars if e.chars is not None else fallback for e in recognizer_extents(guard)),
                     default=fallback)
        _hold_backs[detector] = cached
    return cached


def _patterns(recognizer: object) -> Iterable[tuple[str, str]]:
    for pattern in getattr(recognizer, "patterns", None) or []:  # Presidio PatternRecognizer
        yield str(pattern.name), str(pattern.regex)
    for pattern in getattr(recognizer, "_patterns", None) or []:  # IdentifierRecognizer
        yield str(pattern.name), str(pattern.regex.pattern)


_WHITESPACE: Final = " \t\n\r\f\v\u00a0\u2009\u202f"


def _whitespace_width(regex: str) -> int | None:
    """0 if the pattern cannot match whitespace, else its maximum match width (None:
    unbounded). Conservative: anything that may match a space counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import sre_constants as c
        import sre_parse

    def can_match_space(items: Iterable[tuple[object, object]]) -> bool:
        for op, av in items:
            if op is c.LITERAL and isinstance(av, int):
                if chr(av) in _WHITESPACE:
                    return True
            elif op in (c.NOT_LITERAL, c.ANY):
                return True
            elif op is c.IN and isinstance(av, list):
                negate = any(o is c.NEGATE for o, _ in av)
                hit = any(
                    (o is c.LITERAL and chr(a) in _WHITESPACE)
                    or (o is c.RANGE and any(a[0] <= ord(ch) <= a[1] for ch in _WHITESPACE))
                    or (o is c.CATEGORY and a in (c.CATEGORY_SPACE, c.CATEGORY_NOT_WORD,
                                                  c.CATEGORY_NOT_DIGIT))
                    for o, a in av
                )
                if hit != negate:
                    return True
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and isinstance(av, tuple):
                if can_match_space(av[2]):
                    return True
            elif op is c.SUBPATTERN and isinstance(av, tuple):
                if can_match_space(av[-1]):
                    return True
            elif op is c.BRANCH and isinstance(av, tuple):
                if any(can_match_space(branch) for branch in av[1]):
                    return True
            elif op is c.GROUPREF_EXISTS and isinstance(av, tuple):
                if any(can_match_space(part) for part in av[1:] if part is not None):
                    return True
            elif op not in (c.AT, c.ASSERT, c.ASSERT_NOT, c.CATEGORY, c.GROUPREF):
                return True  # anything not understood: assume it may
        return False

    parsed = sre_parse.parse(regex)
    if not can_match_space(parsed.data):
        return 0
    width = parsed.getwidth()[1]
    return None if width >= c.MAXREPEAT else int(width)
