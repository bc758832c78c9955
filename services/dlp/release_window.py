"""The sliding window of a streamed answer: release only text that can no longer become
part of a detection (issue 12).

The window keeps the raw text not yet released. Each screening covers that text plus a
left context of already released text (so context words still count), and yields a cut
point: everything before it is released — redacted as ``DlpGuard.screen`` would redact it,
pseudonyms restored — and everything after it waits for more text. The cut is chosen so that
nothing after it can still change what is before it:

* it lies at least ``HOLD_BACK`` characters before the end of the text received so far:
  a value that contains spaces (a name, an IBAN or phone number in groups, a street address,
  a date) is at most that long, so it is complete — and detected — before any part of it
  could be released;
* it lies on whitespace, never inside a run of non-space characters: an e-mail address, an
  IBAN or ID written without spaces is never cut, however long and however it was chunked;
* it never lies inside a detected value: the cut moves to the value's start.

``HOLD_BACK`` = 64 characters, from the recognizers' longest values that contain spaces:
IBAN in groups of four ≤ 42 (34 characters + 8 spaces), international phone numbers in
groups ≤ 24, German street addresses (street, number, postcode, city) ≤ ~60, names with
titles and particles (``Prof. Dr. med. Anna-Lena von Hohenberg``) ≤ ~45, dates ≤ 20. A value
longer than that *and* containing spaces is the only thing the window cannot guarantee;
values without spaces are never cut at all.

Screening runs when at least ``SCREEN_EVERY`` new characters arrived (and at the end), so a
1,000-character answer streamed one character at a time costs about 1,000 / SCREEN_EVERY
screenings of ~150 characters, not one per chunk. The decision that is audited is the one
over the whole answer, taken at the end; a block at any point ends the stream, and nothing
after the decision is released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from schemas.events import DlpDecision
from services.dlp.guard import DlpGuard, Finding, PolicyContext
from services.dlp.redaction import restore_pseudonyms

HOLD_BACK: Final = 64
CONTEXT: Final = 64
SCREEN_EVERY: Final = 32


@dataclass(frozen=True, slots=True)
class Release:
    text: str
    blocked: bool = False
    decision: DlpDecision | None = None


class ReleaseWindow:
    def __init__(
        self,
        guard: DlpGuard,
        context: PolicyContext,
        pseudonyms: dict[str, str] | None = None,
        *,
        hold_back: int = HOLD_BACK,
        screen_every: int = SCREEN_EVERY,
    ) -> None:
        self._guard = guard
        self._context = context
        self._pseudonyms = pseudonyms or {}
        self._hold_back = hold_back
        self._screen_every = screen_every
        self._raw: list[str] = []
        self._length = 0
        self._released = 0  # raw characters already released
        self._screened_at = 0  # raw length at the last screening
        self._blocked = False
        self.decision: DlpDecision | None = None

    @property
    def text(self) -> str:
        return "".join(self._raw)

    def feed(self, piece: str) -> Release:
        if self._blocked:
            return Release("", blocked=True, decision=self.decision)
        self._raw.append(piece)
        self._length += len(piece)
        if self._length - self._screened_at < self._screen_every:
            return Release("", decision=self.decision)
        return self._release(final=False)

    def finish(self) -> Release:
        if self._blocked:
            return Release("", blocked=True, decision=self.decision)
        return self._release(final=True)

    def _release(self, *, final: bool) -> Release:
        raw = "".join(self._raw)
        self._raw = [raw]
        self._screened_at = len(raw)
        start = max(0, self._released - CONTEXT)
        window = raw[start:]
        # The audited decision is the one over the whole answer: the last screening sees it all.
        screening = self._guard.screen([raw if final else window], direction="output", context=self._context)
        offset = 0 if final else start
        self.decision = screening.decision
        if screening.decision.action == "block" or screening.texts is None:
            self._blocked = True
            return Release("", blocked=True, decision=self.decision)
        findings = [
            Finding(f.type, f.start + offset, f.end + offset, f.score, 0)
            for f in screening.findings
            if screening.decision.action != "allow"
        ]
        cut = len(raw) if final else self._cut(raw, findings)
        if cut <= self._released:
            return Release("", decision=self.decision)
        piece = raw[self._released : cut]
        inside = [
            Finding(f.type, max(f.start, self._released) - self._released, min(f.end, cut) - self._released, f.score, 0)
            for f in findings
            if f.end > self._released and f.start < cut
        ]
        self._released = cut
        text = self._guard.redact_findings(piece, inside) if inside else piece
        if self._pseudonyms:
            text = restore_pseudonyms(text, self._pseudonyms)
        return Release(text, decision=self.decision)

    def _cut(self, raw: str, findings: list[Finding]) -> int:
        cut = len(raw) - self._hold_back
        while True:
            while cut > self._released and not raw[cut - 1].isspace():
                cut -= 1  # on whitespace: never inside a run of non-space characters
            inside = [f.start for f in findings if f.start < cut < f.end]
            if not inside:
                return cut
            cut = min(inside)
