"""One prompt-injection detector for user messages, tool messages and tool results (pure).

Layers, cheapest first, all on the folded text (``normalize.fold``):

1. hidden payloads — Unicode tag characters, base64 blocks that decode to words, the ROT13
   reading — are scanned like texts of their own;
2. fast rules (``rules.py``) name what they see;
3. the learned classifier (``classifier.py``) scores every text, segment and payload; the
   highest score counts.

Instructions split across messages are caught by scanning the concatenation of the last
texts as well. Nothing here keeps or returns text: scores and signal names only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from services.kernel.guard.classifier import LinearModel, load_model
from services.kernel.guard.lexicon import moderation_scores, topic_scores
from services.kernel.guard.normalize import INVISIBLE, TAGS, fold, payloads, rot13, split_quotes
from services.kernel.guard.rules import Severity, signals

Level = Literal["none", "suspicious", "high"]
# Scores above these make the tool gateway's verdict suspicious / high without any rule.
SUSPICIOUS_SCORE: Final = 0.5
HIGH_SCORE: Final = 0.85
JOIN_LAST: Final = 3  # texts concatenated for instructions split across messages
_JOIN_PART: Final = 300
# "rot13" folds to "rotie" (leetspeak inside a word); both spellings count.
_ROT13_HINT: Final = re.compile(r"\brot ?-?(?:13|ie)\b|\bc(?:ae|ä)sar")


@dataclass(frozen=True, slots=True)
class InjectionScan:
    score: float  # classifier probability, the highest over texts, segments and payloads
    signals: tuple[str, ...]  # rule names, sorted
    rule_severity: Level  # the rules alone: high, suspicious (one or more), none
    encoded: bool  # a signal or the top score came from a hidden payload
    # Instructions *quoted* inside a frame of ordinary text ("a customer wrote: '…'. Please
    # categorise."): scored apart, so a support ticket about an attack is not the attack.
    quoted_score: float = 0.0
    quoted_signals: tuple[str, ...] = ()

    @property
    def level(self) -> Level:
        """The detector's own reading (the policy decides with its own thresholds): a quoted
        attack alone is at most suspicious."""
        if self.rule_severity == "high" or self.score >= HIGH_SCORE or len(self.signals) >= 2:
            return "high"
        if self.signals or self.score >= SUSPICIOUS_SCORE or self.quoted_signals or self.quoted_score >= HIGH_SCORE:
            return "suspicious"
        return "none"


def _joined(folded: Sequence[str]) -> str:
    parts = [t if len(t) <= 2 * _JOIN_PART else f"{t[:_JOIN_PART]} {t[-_JOIN_PART:]}" for t in folded[-JOIN_LAST:]]
    return " ".join(parts)


def scan_injection(texts: Sequence[str], model: LinearModel | None = None, *, join: bool = True) -> InjectionScan:
    model = model or load_model()
    found: dict[str, Severity] = {}
    quoted: dict[str, Severity] = {}
    # What the classifier reads, collected first and scored in one batch (one round of array
    # operations instead of one per piece): (kind, folded text, the rules' hits on it).
    jobs: list[tuple[str, str, dict[str, Severity]]] = []
    folded_texts: list[str] = []
    for text in texts:
        if TAGS.search(text):
            found["unicode_tags"] = "high"
        if INVISIBLE.search(text):
            found["invisible_characters"] = "suspicious"
        folded = fold(text)
        folded_texts.append(folded)
        frame, passages = split_quotes(folded)
        found.update(signals(frame))
        jobs.append(("frame", frame, {}))
        for passage in passages:
            quoted.update(signals(passage))
            jobs.append(("quoted", passage, {}))
        for payload in payloads(text, rot13=False):
            hidden = fold(payload.text)
            jobs.append(("hidden", hidden, signals(hidden)))
        # The ROT13 reading of the folded text (folding commutes with ROT13): the rules read
        # it always, the classifier only when the text tells the model to decode ROT13.
        hidden = rot13(folded)
        hits = signals(hidden)
        if hits or _ROT13_HINT.search(folded):
            jobs.append(("hidden", hidden, hits))
    joined = split_quotes(_joined(folded_texts))[0] if join and len(folded_texts) > 1 else None
    if joined is not None:
        jobs.append(("joined", joined, signals(joined)))
    score = quoted_score = 0.0
    encoded = False
    for (kind, _, hits), value in zip(jobs, model.max_scores([job[1] for job in jobs]), strict=True):
        if kind == "frame":
            score = max(score, value)
        elif kind == "quoted":
            quoted_score = max(quoted_score, value)
        elif kind == "hidden" and (hits or value >= SUSPICIOUS_SCORE):
            found.update(hits)
            found["encoded_instruction"] = "high"
            encoded = True
            score = max(score, value)
        elif kind == "joined" and (hits.keys() - found.keys() or value > score):  # last: after all others
            found.update(hits)
            score = max(score, value)
    severity: Level = "none"
    if any(s == "high" for s in found.values()):
        severity = "high"
    elif found:
        severity = "suspicious"
    return InjectionScan(round(score, 4), tuple(sorted(found)), severity, encoded, round(quoted_score, 4),
                         tuple(sorted(quoted.keys() - found.keys())))


@dataclass(frozen=True, slots=True)
class InjectionVerdict:
    """The tool gateway's reading of a tool result: severity and signal names (metadata)."""

    severity: Level
    signals: tuple[str, ...]
    score: float = 0.0


def scan(texts: Sequence[str]) -> InjectionVerdict:
    """Tool results: ``high`` blocks where the tool policy says so. The strings of one result
    are independent fields, so they are not concatenated."""
    result = scan_injection(list(texts), join=False)
    names = tuple(sorted({*result.signals, *(f"quoted.{n}" for n in result.quoted_signals)}))
    if result.score >= HIGH_SCORE and not names:
        names = ("classifier",)
    return InjectionVerdict(result.level, names, result.score)


def topics(texts: Sequence[str]) -> dict[str, float]:
    """Per topic, the highest score over the texts (folded first)."""
    best: dict[str, float] = {}
    for text in texts:
        for name, value in topic_scores(fold(text)).items():
            best[name] = max(best.get(name, 0.0), value)
    return best


def moderation(texts: Sequence[str]) -> dict[str, float]:
    best: dict[str, float] = {}
    for text in texts:
        for name, value in moderation_scores(fold(text)).items():
            best[name] = max(best.get(name, 0.0), value)
    return best
