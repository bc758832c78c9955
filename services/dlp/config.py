"""Detection tuning read from ``guard.yaml``: which findings count, how they are redacted.

This is *feature* configuration (what the detectors report and how redaction looks); the
decision what to do with the features lives only in the Rego policy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from schemas.vocabulary import Direction

OperatorType = Literal["replace", "mask", "hash", "redact", "keep"]


class DirectionScores(msgspec.Struct, forbid_unknown_fields=True):
    input: float
    output: float

    def for_direction(self, direction: Direction) -> float:
        return self.input if direction == "input" else self.output


class AllowRule(msgspec.Struct, forbid_unknown_fields=True):
    """Known false positives: a finding whose text equals a term (case-insensitively) or
    fully matches a pattern is dropped. ``entities`` empty means every type."""

    terms: list[str] = msgspec.field(default_factory=list)
    patterns: list[str] = msgspec.field(default_factory=list)
    entities: list[str] = msgspec.field(default_factory=list)
    reason: str = ""


class OperatorSpec(msgspec.Struct, forbid_unknown_fields=True):
    type: OperatorType = "replace"
    new_value: str | None = None  # replace: None → typed placeholder "<TYPE>"
    masking_char: str = "*"
    chars_to_mask: int = 100
    from_end: bool = False
    # mask: keep only this many trailing letters/digits visible, whatever the separators
    # ("**** **** **** 1111", "****.****.****.1111"); overrides chars_to_mask when set.
    keep_last: int | None = None
    hash_type: Literal["sha256", "sha512"] = "sha256"


class GuardConfig(msgspec.Struct, forbid_unknown_fields=True):
    languages: list[str] = msgspec.field(default_factory=lambda: ["de", "en"])
    # Short or ambiguous text falls back to this language: German is our normal case.
    default_language: str = "de"
    # spaCy's small English NER adds ~20 ms per 1,000 characters; off by default.
    english_ner: bool = False
    identifying_entities: list[str] = msgspec.field(default_factory=list)
    quasi_identifying_entities: list[str] = msgspec.field(default_factory=list)
    confidential_entities: list[str] = msgspec.field(default_factory=list)
    disabled_entities: list[str] = msgspec.field(default_factory=list)
    # Recognizer packs a tenant may go without (policies/data.json `recognizer_packs` says
    # which packs each tenant runs). Entities in no pack always run.
    entity_packs: dict[str, list[str]] = msgspec.field(default_factory=dict)
    min_scores: dict[str, DirectionScores] = msgspec.field(default_factory=dict)
    allowlist: list[AllowRule] = msgspec.field(default_factory=list)
    operators: dict[str, OperatorSpec] = msgspec.field(default_factory=dict)

    def min_score(self, entity: str, direction: Direction) -> float:
        spec = self.min_scores.get(entity) or self.min_scores.get("default")
        return spec.for_direction(direction) if spec else 0.5

    def operator(self, entity: str) -> OperatorSpec:
        return self.operators.get(entity) or self.operators.get("default") or OperatorSpec()


class CompiledAllowlist:
    """Allow rules with their patterns compiled once."""

    def __init__(self, rules: list[AllowRule]) -> None:
        self._rules = [
            (
                frozenset(t.casefold() for t in rule.terms),
                [re.compile(p) for p in rule.patterns],
                frozenset(rule.entities),
            )
            for rule in rules
        ]

    def allows(self, entity: str, value: str) -> bool:
        folded = value.casefold()
        for terms, patterns, entities in self._rules:
            if entities and entity not in entities:
                continue
            if folded in terms or any(p.fullmatch(value) for p in patterns):
                return True
        return False


def load_guard_config(path: Path) -> GuardConfig:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return msgspec.convert(raw, GuardConfig)
