"""Screening a streamed answer with a sliding window (issue 12): release only text that can no
longer become part of a detection. Pure and synchronous; the transport is ``streaming.py``.

``StreamScreen.feed(delta)`` takes the model's text as it arrives, ``finish()`` ends it; both
return a ``Release``: the text that may go to the caller now (redacted as the decision in force
says, pseudonyms restored), whether the stream is blocked, and the latest decision.

The raw text not yet released waits in a buffer. A screening covers that text plus up to
``context_chars`` of already released text on the left (context words before a value still
raise its score, and a value is never re-released), and chooses a cut; everything before the
cut is released. The cut

* lies at least ``hold_back`` characters before the end of the text received so far: a value
  that contains whitespace (an IBAN in groups, a phone number, a name, an address) is at most
  that long, so it has arrived completely — and is detected — before any part of it could be
  released. ``hold_back`` is derived from the recognizers (``hold_back_for``);
* lies after whitespace, never inside a run of non-whitespace characters: an e-mail address,
  an IBAN or an ID written without spaces is never cut, however long and however chunked;
* never lies inside a detected value or a medical term: the cut moves to its start.

The decision is taken on everything seen so far: the findings, medical terms and words of the
released text (counted once, when released) plus those of the unreleased tail, aggregated as
``DlpGuard.screen`` aggregates them over one text. Once it says block, nothing more is ever
released. At ``finish()`` the decision covers the whole answer.

Cost: a screening runs when at least ``screen_every`` new characters have arrived (and at the
end), over a window of about ``context_chars + hold_back + screen_every`` characters; it is
skipped while nothing could be released anyway. docs/dlp.md (Streaming) has the numbers.

Nothing here logs, and no exception message carries text.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from schemas.events import DlpDecision, EntityCount
from services.dlp.guard import DlpGuard, Finding, PolicyContext
from services.dlp.medical import MedicalMatch, MedicalScan
from services.dlp.redaction import PSEUDONYM, restore_pseudonyms

__all__ = [
    "CONTEXT_CHARS",
    "DECLARED_EXTENTS",
    "SCREEN_EVERY",
    "Extent",
    "GuardScreener",
    "Release",
    "Screener",
    "StreamScreen",
    "Tally",
    "WindowScan",
    "hold_back_for",
    "recognizer_extents",
]

# Left context of every screening: Presidio's context enhancer reads the 5 words before a
# value, the medical layer looks 60 characters back for "ICD"/"Diagnose", the phone recognizer
# 30 for "Bestellnr.". Extended to the start of the word it falls into.
CONTEXT_CHARS: Final = 64
SCREEN_EVERY: Final = 128  # cost vs. granularity: docs/dlp.md (Streaming)

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
    ) -> None:
        if hold_back < 0 or context_chars < 0 or screen_every < 1:
            raise ValueError("hold_back and context_chars must be >= 0, screen_every >= 1")
        self._screener = screener
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

    @classmethod
    def for_guard(
        cls,
        guard: DlpGuard,
        context: PolicyContext,
        pseudonyms: Mapping[str, str] | None = None,
        *,
        context_chars: int = CONTEXT_CHARS,
        screen_every: int = SCREEN_EVERY,
    ) -> StreamScreen:
        return cls(
            GuardScreener(guard, context),
            hold_back=hold_back_for(guard),
            pseudonyms=pseudonyms,
            context_chars=context_chars,
            screen_every=screen_every,
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
            self._length += len(delta)
        if self._length - self._screened_at < self._screen_every:
            return Release("", decision=self.decision)
        if self._length - self.hold_back <= self._released:
            return Release("", decision=self.decision)  # nothing could be released yet
        return self._screen(final=False)

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
        cut = end if final else self._cut(end - self.hold_back, spans)
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
            for name, regex in _patterns(recognizer):
                width = _whitespace_width(regex)
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
