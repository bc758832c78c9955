"""The Presidio AnalyzerEngine, built explicitly for offline use, with swappable org recognizers.

Engines are built once (slow: spaCy pipelines, name gazetteers); ``with_org_identifiers``
returns a new analyzer that shares them and differs only in the organisation recognizers,
so a reload swaps one reference and never blocks screening.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from services.dlp.config import GuardConfig
from services.dlp.context_enhancer import FastContextEnhancer
from services.dlp.nlp import NER_ENTITIES, OfflineNlpEngine
from services.dlp.recognizers.org_identifiers import OrgIdentifier, org_recognizers
from services.dlp.recognizers.standard import generic_recognizers

# Presidio logs recognizer decisions at INFO/DEBUG; keep anything below WARNING out of the
# service logs, and never enable its decision-process tracing (it would log matched text).
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)


class EntityDetector:
    def __init__(
        self,
        config: GuardConfig,
        nlp_engine: OfflineNlpEngine,
        base_recognizers: dict[str, list[EntityRecognizer]],
        org_identifiers: Sequence[OrgIdentifier],
    ) -> None:
        self.config = config
        self.nlp_engine = nlp_engine
        self._base = base_recognizers
        self.org_identifiers = list(org_identifiers)
        self._recognizers = {
            lang: [
                r for r in [*base_recognizers[lang], *org_recognizers(self.org_identifiers, lang)]
                if not set(r.supported_entities) <= set(config.disabled_entities)
            ]
            for lang in config.languages
        }
        # One analyzer per set of switched-off entity packs (a tenant without US or UK
        # identifiers skips those recognizers entirely). Built on first use; they share the
        # nlp engine and the recognizer objects, so each costs a registry, not a model.
        self._analyzers: dict[frozenset[str], AnalyzerEngine] = {}
        self._analyzer_without(frozenset())  # the common case, built up front

    def _analyzer_without(self, disabled: frozenset[str]) -> AnalyzerEngine:
        analyzer = self._analyzers.get(disabled)
        if analyzer is not None:
            return analyzer
        registry = RecognizerRegistry(supported_languages=list(self.config.languages))
        for lang in self.config.languages:
            for recognizer in self._recognizers[lang]:
                if not set(recognizer.supported_entities) <= disabled:
                    registry.add_recognizer(recognizer)
        analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self.nlp_engine,
            supported_languages=list(self.config.languages),
            context_aware_enhancer=FastContextEnhancer(
                context_similarity_factor=0.35, min_score_with_context_similarity=0.45
            ),
        )
        self._analyzers[disabled] = analyzer
        return analyzer

    @classmethod
    def build(
        cls,
        config: GuardConfig,
        extra_recognizers: dict[str, list[EntityRecognizer]],
        org_identifiers: Sequence[OrgIdentifier],
    ) -> EntityDetector:
        nlp_engine = OfflineNlpEngine(config.languages, english_ner=config.english_ner)
        nlp_engine.load()
        base: dict[str, list[EntityRecognizer]] = {}
        for lang in config.languages:
            recognizers = generic_recognizers(lang) + extra_recognizers.get(lang, [])
            if lang == "en" and config.english_ner:
                recognizers.append(
                    SpacyRecognizer(supported_language="en", supported_entities=list(NER_ENTITIES))
                )
            base[lang] = recognizers
        return cls(config, nlp_engine, base, org_identifiers)

    def with_org_identifiers(self, org_identifiers: Sequence[OrgIdentifier]) -> EntityDetector:
        return EntityDetector(self.config, self.nlp_engine, self._base, org_identifiers)

    def detect(
        self, text: str, language: str, disabled: frozenset[str] = frozenset()
    ) -> list[RecognizerResult]:
        """Findings in ``text``; recognizers whose every entity is in ``disabled`` do not run."""
        results: list[RecognizerResult] = self._analyzer_without(disabled).analyze(
            text=text, language=language, score_threshold=0.0
        )
        return results
