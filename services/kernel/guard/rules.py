"""Fast rules: prompt-injection and jailbreak signals, English and German (pure).

The rules read *folded* text (``normalize.fold``: lower case, no invisible characters,
homoglyphs and leetspeak folded; ``ß`` reads ``ss``). Every hit names a signal; nothing
here scores by a model. ``high``: a signal with no innocent reading in a prompt or a tool
result; ``suspicious``: one that also appears in ordinary text about the topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Severity = Literal["suspicious", "high"]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    severity: Severity
    pattern: re.Pattern[str]
    # Substrings one of which every match contains: a cheap pre-filter (C-speed ``in``).
    triggers: tuple[str, ...]


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("ß", "ss"))  # folded text reads ß as ss


_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|initial|original|all|any|your|these|those|the)"
_INSTRUCTIONS = r"(?:instructions?|prompts?|rules|guidelines|directions|directives|commands|guardrails|policies|constraints)"
_VORHER = r"(?:vorherigen?|vorigen?|bisherigen?|obigen?|alle[nrs]?|deine[nrs]?|ihre[nrs]?|sämtliche[nrs]?|die|diese[nr]?|ursprünglichen?)"
_ANWEISUNGEN = (r"(?:anweisungen|instruktionen|regeln|vorgaben|richtlinien|befehle|einschränkungen|"
                r"systemanweisungen|sicherheitsregeln)")

RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "instruction_override",
        "high",
        _re(
            rf"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon)\b(?:\W+\w+){{0,3}}?\W+{_PREVIOUS}\W+"
            rf"(?:\w+\W+){{0,2}}?{_INSTRUCTIONS}\b"
            rf"|\b(?:ignorier\w*|vergiss|vergesst|missacht\w*|übergeh\w*|umgeh\w*|verwirf|verwerft)\b(?:\W+\w+){{0,3}}?\W+"
            rf"{_VORHER}\W+(?:\w+\W+){{0,2}}?{_ANWEISUNGEN}\b"
            rf"|\b{_ANWEISUNGEN}\b(?:\W+\w+){{0,4}}?\W+(?:ignorieren|vergessen|missachten|ausser kraft)\b"
            r"|\b(?:setze|setzt)\b(?:\W+\w+){0,4}\W+ausser kraft\b"
            # the user's own request set aside (indirect injection: "disregard the user's request")
            r"|\b(?:ignore|disregard|forget|override|bypass|skip)\b(?:\W+\w+){0,2}?\W+(?:the )?users?'?s?\W+"
            r"(?:request|question|instructions?|task|prompt)\b"
            r"|\b(?:ignorier\w*|vergiss|missacht\w*|übergeh\w*)\b(?:\W+\w+){0,2}?\W+(?:die |den )?"
            r"(?:bitte|anfrage|frage|anweisung\w*|aufgabe) des (?:nutzers|benutzers|anwenders)\b"
        ),
        ("ignor", "disregard", "forget", "overrid", "bypass", "skip", "drop", "abandon", "vergiss", "vergesst", "missacht", "übergeh", "umgeh", "verwirf", "verwerft", "ausser kraft"),
    ),
    Rule(
        "chat_template_token",
        "high",
        _re(r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?inst\]|<<sys>>|<\|begin_of_text\|>"),
        ("<|", "[inst", "[/inst", "<<sys"),
    ),
    Rule(
        "exfiltration",
        "high",
        _re(
            r"!\[[^\]]*\]\(https?://[^)\s]+\?[^)\s]*=|"
            r"\b(?:send|post|upload|forward|leak|transmit|exfiltrate)\b[^.\n]{0,60}\b(?:to|an)\b\s+https?://"
            r"|\b(?:sende|schicke|übermittle|lade)\b[^.\n]{0,60}\b(?:an|auf|hoch)\b\s+https?://"
        ),
        ("http",),
    ),
    Rule(
        "role_hijack",
        "suspicious",
        _re(
            r"\byou are now\b|\bfrom now on,? you\b|\bact as (?:an? |the )?(?:system|admin|developer|dan|root)\b"
            r"|\bdu bist (?:jetzt|ab sofort|nun|ab jetzt)\b|\bab sofort bist du\b|\bab jetzt bist du\b"
            r"|\bpretend (?:to be|you are)\b|\btu so,? als (?:ob|wärst)\b"
        ),
        ("you are now", "from now on", "act as", "du bist", "bist du", "pretend", "tu so"),
    ),
    Rule(
        "jailbreak_persona",
        "suspicious",
        _re(
            r"\bdo anything now\b|\bdan mode\b|\bdeveloper mode\b|\bentwicklermodus\b|\bjailbreak(?:ed)?\b"
            r"|\bwithout (?:any )?(?:restrictions|filters?|censorship|limits|guidelines|rules)\b"
            r"|\b(?:no|keine) (?:more )?(?:restrictions|filters?|censorship|limits)\b|\bunfiltered\b|\buncensored\b"
            r"|\bohne (?:jegliche |alle |irgendwelche )?(?:einschränkungen|filter|zensur|regeln|grenzen)\b"
            r"|\b(?:unzensiert|ungefiltert)\w*\b"
        ),
        ("anything now", "dan mode", "developer mode", "entwicklermodus", "jailbreak", "restriction", "filter", "censor", "limits", "guidelines", "rules", "ohne", "keine", "unzensiert", "ungefiltert"),
    ),
    Rule(
        "system_prompt_probe",
        "suspicious",
        _re(
            r"\bsystem ?prompts?\b|\b(?:reveal|show|print|repeat|output|display|dump)\b(?:\W+\w+){0,2}?\W+"
            r"(?:your|the|initial|original|hidden|secret)\W+(?:\w+\W+)?(?:instructions|prompt)\b"
            r"|\bsystemanweisung\w*\b|\bsystem-?prompt\w*\b"
            r"|\b(?:zeig|zeige|gib|nenne|wiederhole|verrate)\b(?:\W+\w+){0,3}?\W+(?:deine|die|ihre)\W+"
            r"(?:\w+\W+)?(?:anweisungen|instruktionen|vorgaben)\b"
        ),
        ("system", "instructions", "prompt", "anweisung", "instruktion", "vorgaben"),
    ),
    Rule(
        "tool_directive",
        "suspicious",
        _re(
            r"\b(?:call|invoke|use|run|execute)\s+(?:the\s+)?(?:tool|function)\b|\"tool_calls?\"\s*:"
            r"|\bführe\b[^.\n]{0,40}\b(?:aus|befehl)\b|\brufe?\b[^.\n]{0,30}\b(?:tool|funktion)\b[^.\n]{0,30}\bauf\b"
        ),
        ("tool", "function", "führe", "funktion"),
    ),
    Rule(
        "message_to_model",
        "suspicious",
        _re(
            r"\b(?:dear|attention|note to|note for|hey|hello|reminder for|message for|instructions? for) "
            r"(?:any |the |all |every |whichever )?(?:ai|assistant|llm|model|agent|chatbot|language model)s?\b"
            r"|\b(?:ai|llm|assistant|agent|model|language model|chatbot)s? (?:reading|processing|summari[sz]ing|handling)"
            r" this\b"
            r"|\b(?:liebe|an die|hinweis für die|achtung|nachricht an|anweisung an|anweisung für|erinnerung an) "
            r"(?:jede |die |den |alle )?(?:ki|künstliche intelligenz|assistenz|sprachmodell|assistent\w*|chatbot\w*)\b"
            r"|\b(?:ki|assistent|sprachmodell),? (?:die|der) (?:das|dies) (?:liest|verarbeitet|zusammenfasst)\b"
        ),
        ("ai", "assistant", "llm", "model", "agent", "chatbot", "ki", "künstliche", "assistenz", "sprachmodell", "assistent"),
    ),
    Rule(
        "new_instructions",
        "suspicious",
        _re(r"\bnew (?:instructions|task|rules)\s*:|\bneue (?:anweisungen|aufgabe|regeln)\s*:"
            r"|\bupdated (?:system )?instructions\b|\baktualisierte (?:system)?anweisungen\b"),
        ("new ", "neue ", "updated", "aktualisierte"),
    ),
)


def signals(folded: str) -> dict[str, Severity]:
    """Every rule that fires on ``folded`` text, by name."""
    return {
        rule.name: rule.severity
        for rule in RULES
        if any(t in folded for t in rule.triggers) and rule.pattern.search(folded)
    }
