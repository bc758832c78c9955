"""The Presidio AnalyzerEngine, built explicitly for offline use, with swappable org recognizers.

Engines are built once (slow: spaCy pipelines, name gazetteers); ``with_org_identifiers``
returns a new analyzer that shares them and differs only in the organisation recognizers,
so a reload swaps one reference and never blocks screening.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from services.dlp.config import GuardConfig
from services.dlp.context_enhancer import FastContextEnhancer
from services.dlp.nlp import NER_ENTITIES, LazyNlpArtifacts, OfflineNlpEngine
from services.dlp.prefilter import PatternPrefilter, PrefilteredRegistry
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
        prefilters: dict[str, PatternPrefilter] | None = None,
    ) -> None:
        self.config = config
        self.nlp_engine = nlp_engine
        self._base = base_recognizers
        self.org_identifiers = list(org_identifiers)
        # Built from the base recognizers only, so an org-identifier reload reuses them (org
        # recognizers always run); a recognizer switched off for a tenant is simply not in
        # that tenant's registry. None: no shortcut, every recognizer runs.
        self._prefilters = prefilters or {}
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
        registry = PrefilteredRegistry(supported_languages=list(self.config.languages))
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
        prefilter_cache: Path | None = None,
        *,
        prefilter: bool = True,
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
        prefilters = (
            {lang: PatternPrefilter(base[lang], prefilter_cache) for lang in config.languages}
            if prefilter else None
        )
        return cls(config, nlp_engine, base, org_identifiers, prefilters)

    def with_org_identifiers(self, org_identifiers: Sequence[OrgIdentifier]) -> EntityDetector:
        return EntityDetector(self.config, self.nlp_engine, self._base, org_identifiers, self._prefilters)

    def detect(
        self, text: str, language: str, disabled: frozenset[str] = frozenset()
    ) -> list[RecognizerResult]:
        """Findings in ``text``; recognizers whose every entity is in ``disabled`` do not run."""
        analyzer = self._analyzer_without(disabled)
        prefilter = self._prefilters.get(language)
        # Pattern recognizers that cannot match this text are skipped (services/dlp/prefilter.py).
        with prefilter.skipping(text) if prefilter is not None else contextlib.nullcontext():
            results: list[RecognizerResult] = analyzer.analyze(
                text=text, language=language, score_threshold=0.0,
                nlp_artifacts=LazyNlpArtifacts(self.nlp_engine, text, language),
            )
        return results

    @property
    def prefilters_ready(self) -> bool:
        """Whether every language's prefilter automaton is built (tests wait for it)."""
        return all(p.ready for p in self._prefilters.values())

    def prefilter_for(self, language: str) -> PatternPrefilter | None:
        return self._prefilters.get(language)
