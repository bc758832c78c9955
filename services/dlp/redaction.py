"""Redaction with presidio-anonymizer and reversible per-request pseudonymisation.

Pseudonyms are numbered per entity type in order of first appearance across all texts of
one request (``<PERSON_1>``, ``<PERSON_2>``); the same value gets the same placeholder
everywhere, so a model can refer to it consistently. The mapping lives only in the returned
Screening (memory of the request), never in logs or audit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from services.dlp.config import GuardConfig, OperatorSpec

PSEUDONYM: Final = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d{1,6})>")


@dataclass(frozen=True, slots=True)
class Span:
    type: str
    start: int
    end: int
    score: float


def _operator(entity: str, spec: OperatorSpec) -> OperatorConfig:
    if spec.type == "replace":
        return OperatorConfig("replace", {"new_value": spec.new_value or f"<{entity}>"})
    if spec.type == "mask" and spec.keep_last is not None:
        return OperatorConfig("custom", {"lambda": _mask_keeping(spec.masking_char, spec.keep_last)})
    if spec.type == "mask":
        return OperatorConfig("mask", {
            "masking_char": spec.masking_char,
            "chars_to_mask": spec.chars_to_mask,
            "from_end": spec.from_end,
        })
    if spec.type == "hash":
        return OperatorConfig("hash", {"hash_type": spec.hash_type})
    if spec.type == "redact":
        return OperatorConfig("redact", {})
    return OperatorConfig("keep", {})


def _mask_keeping(char: str, keep: int) -> Callable[[str], str]:
    # A count of characters to mask leaks middle digits when the value has separators
    # ("4111 1111 1111 1111" with 12 masked shows "11 1111"); count letters and digits.
    def mask(value: str) -> str:
        visible = 0
        out = []
        for ch in reversed(value):
            if ch.isalnum():
                if visible < keep:
                    visible += 1
                    out.append(ch)
                else:
                    out.append(char)
            else:
                out.append(ch)
        return "".join(reversed(out))

    return mask


def _normalise(value: str) -> str:
    return " ".join(value.split()).casefold()


class Redactor:
    def __init__(self, config: GuardConfig) -> None:
        self._config = config
        self._engine = AnonymizerEngine()  # type: ignore[no-untyped-call]
        self._operators: dict[str, OperatorConfig] = {}

    def _operator_for(self, entity: str) -> OperatorConfig:
        op = self._operators.get(entity)
        if op is None:
            op = self._operators[entity] = _operator(entity, self._config.operator(entity))
        return op

    def keeps(self, entity: str) -> bool:
        return self._config.operator(entity).type == "keep"

    def redact(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> list[str]:
        return [self._apply(text, text_spans, {}) for text, text_spans in zip(texts, spans, strict=True)]

    def pseudonymize(
        self, texts: Sequence[str], spans: Sequence[Sequence[Span]]
    ) -> tuple[list[str], dict[str, str]]:
        """Numbered placeholders for every span whose operator is not ``keep``."""
        by_value: dict[tuple[str, str], str] = {}
        originals: dict[str, str] = {}
        counters: dict[str, int] = {}
        for text, text_spans in zip(texts, spans, strict=True):
            for span in sorted(text_spans, key=lambda s: s.start):
                if self.keeps(span.type):
                    continue
                value = text[span.start:span.end]
                key = (span.type, _normalise(value))
                if key not in by_value:
                    counters[span.type] = counters.get(span.type, 0) + 1
                    placeholder = f"<{span.type}_{counters[span.type]}>"
                    by_value[key] = placeholder
                    originals[placeholder] = value

        def lookup(entity: str) -> Callable[[str], str]:
            return lambda value: by_value.get((entity, _normalise(value)), f"<{entity}>")

        entity_types = {s.type for text_spans in spans for s in text_spans if not self.keeps(s.type)}
        operators = {e: OperatorConfig("custom", {"lambda": lookup(e)}) for e in entity_types}
        out = [self._apply(text, text_spans, operators) for text, text_spans in zip(texts, spans, strict=True)]
        return out, originals

    def _apply(self, text: str, spans: Sequence[Span], overrides: Mapping[str, OperatorConfig]) -> str:
        if not spans:
            return text
        operators = {s.type: overrides.get(s.type) or self._operator_for(s.type) for s in spans}
        results = [RecognizerResult(s.type, s.start, s.end, s.score) for s in spans]
        # Spans are already free of overlaps; merging adjacent same-type spans across
        # whitespace would glue "<PERSON_1> <PERSON_2>" into one placeholder.
        engine_result = self._engine.anonymize(
            text=text, analyzer_results=results, operators=operators,
            merge_entities_with_spaces=False,
        )
        anonymized: str = engine_result.text
        return anonymized


def restore_pseudonyms(text: str, pseudonyms: Mapping[str, str]) -> str:
    """Put the originals back for placeholders of this request; leave anything else as is."""
    if not pseudonyms:
        return text
    return PSEUDONYM.sub(lambda m: pseudonyms.get(m.group(0), m.group(0)), text)


def pseudonym_types(text: str) -> set[str]:
    return {m.group(1) for m in PSEUDONYM.finditer(text)}
