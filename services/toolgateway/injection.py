"""Prompt-injection check on tool results before they reach the agent. Pure.

Tool results are data, but an agent feeds them to a model — so text in a web page or a ticket
that *addresses the model* ("ignore previous instructions", chat-template tokens, invisible
Unicode carrying instructions) is an attack on the agent. This check is deliberately a
transparent pattern layer, English and German: every hit names a signal, nothing is scored
by a model. ``high``: a signal that has no innocent reading in a tool result, or two
different suspicious ones; ``suspicious``: one suspicious signal.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

Severity = Literal["none", "suspicious", "high"]


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    severity: Literal["suspicious", "high"]
    pattern: re.Pattern[str]


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|all|any|your)"
_VORHER = r"(?:vorherigen|vorigen|bisherigen|obigen|alle[nr]?|deine[nr]?)"

SIGNALS: Final[tuple[Signal, ...]] = (
    Signal(
        "instruction_override",
        "high",
        _re(
            rf"\b(?:ignore|disregard|forget|override)\b(?:\W+\w+){{0,3}}?\W+{_PREVIOUS}\W+(?:\w+\W+){{0,2}}?"
            r"(?:instructions?|prompts?|rules|guidelines|directions)\b"
            rf"|\b(?:ignorier\w*|vergiss|missachte\w*)\b(?:\W+\w+){{0,3}}?\W+{_VORHER}\W+(?:\w+\W+){{0,2}}?"
            r"(?:anweisungen|instruktionen|regeln|vorgaben)\b"
        ),
    ),
    Signal(
        "chat_template_token",
        "high",
        _re(r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?INST\]|<<SYS>>|<\|begin_of_text\|>"),
    ),
    Signal(
        "exfiltration",
        "high",
        _re(
            r"!\[[^\]]*\]\(https?://[^)\s]+\?[^)\s]*=|"
            r"\b(?:send|post|upload|forward|leak)\b[^.\n]{0,60}\b(?:to|an)\b\s+https?://"
            r"|\b(?:sende|schicke|übermittle)\b[^.\n]{0,60}\ban\b\s+https?://"
        ),
    ),
    Signal(
        "role_hijack",
        "suspicious",
        _re(
            r"\byou are now\b|\bfrom now on,? you\b|\bact as (?:an? |the )?(?:system|admin|developer|dan)\b"
            r"|\bdu bist (?:jetzt|ab sofort|nun)\b|\bab sofort bist du\b"
        ),
    ),
    Signal(
        "system_prompt_probe",
        "suspicious",
        _re(r"\bsystem ?prompt\b|\breveal (?:your|the) (?:instructions|prompt)\b|\bsystemanweisung\w*\b"),
    ),
    Signal(
        "tool_directive",
        "suspicious",
        _re(
            r"\b(?:call|invoke|use|run|execute)\s+(?:the\s+)?(?:tool|function)\b|\"tool_calls?\"\s*:"
            r"|\bführe\b[^.\n]{0,40}\b(?:aus|befehl)\b"
        ),
    ),
    Signal("message_to_model", "suspicious", _re(r"\b(?:dear|attention|note to) (?:ai|assistant|llm|model|agent)\b")),
)

# Invisible characters: zero-width and bidi controls hide text from a human reviewer; Unicode
# tag characters (U+E0000..U+E007F) can spell out whole instructions invisibly.
_INVISIBLE: Final = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069]")
_TAGS: Final = re.compile("[\U000e0000-\U000e007f]")


@dataclass(frozen=True, slots=True)
class InjectionVerdict:
    severity: Severity
    signals: tuple[str, ...]  # signal names, sorted; metadata only


def scan(texts: Iterable[str]) -> InjectionVerdict:
    found: dict[str, Literal["suspicious", "high"]] = {}
    for text in texts:
        if _TAGS.search(text):
            found["unicode_tags"] = "high"
        if _INVISIBLE.search(text):
            found["invisible_characters"] = "suspicious"
        # NFKC folds full-width and other look-alike forms onto ASCII; dropping the invisible
        # characters undoes "ig\u200bnore" style splitting.
        normalised = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
        for signal in SIGNALS:
            if signal.name not in found and signal.pattern.search(normalised):
                found[signal.name] = signal.severity
    severity: Severity = "none"
    if any(s == "high" for s in found.values()) or len(found) >= 2:
        severity = "high"
    elif found:
        severity = "suspicious"
    return InjectionVerdict(severity, tuple(sorted(found)))
