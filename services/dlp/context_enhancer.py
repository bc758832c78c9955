"""Presidio's lemma context enhancer, made cheap enough for the request path.

Two changes, same results:

* The stock enhancer finds the token of each finding by walking the spaCy Doc from the
  start (O(findings × tokens)); token offsets are sorted, so bisect finds the same token
  (the first whose end lies beyond the finding's start).
* It deep-copies every result before adjusting scores (a third of its cost on a text with
  twenty findings). The results are fresh objects of this one analyze() call and nobody
  else holds them, so they are adjusted in place.

The scoring rule itself is Presidio's: a context word among the preceding lemmas raises
the score by ``context_similarity_factor`` to at least ``min_score_with_context_similarity``.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer, LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts


class FastContextEnhancer(LemmaContextAwareEnhancer):
    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        if nlp_artifacts is None:
            return raw_results
        by_id = {recognizer.id: recognizer for recognizer in recognizers}
        extra = [word.lower() for word in context or []]
        for result in raw_results:
            metadata = result.recognition_metadata or {}
            recognizer = by_id.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if recognizer is None or not recognizer.context:
                continue
            if metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            surrounding = self._extract_surrounding_words(
                nlp_artifacts=nlp_artifacts, word="", start=result.start
            )
            surrounding.extend(extra)
            supportive = self._find_supportive_word_in_context(
                surrounding, recognizer.context, self.context_matching_mode
            )
            if supportive:
                result.score = min(
                    max(result.score + self.context_similarity_factor,
                        self.min_score_with_context_similarity),
                    ContextAwareEnhancer.MAX_SCORE,
                )
                # Kept after Presidio drops the explanation: the guard breaks ties with it.
                metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
                result.recognition_metadata = metadata
                if result.analysis_explanation is not None:
                    result.analysis_explanation.set_supportive_context_word(supportive)
                    result.analysis_explanation.set_improved_score(result.score)
        return raw_results

    @staticmethod
    def _find_index_of_match_token(
        word: str, start: int, tokens: Any, tokens_indices: list[int]
    ) -> int:
        if not tokens_indices:
            raise ValueError("no tokens to search")  # never the word: it is detected content
        i = max(bisect_right(tokens_indices, start) - 1, 0)
        if start >= tokens_indices[i] + len(tokens[i]) and i + 1 < len(tokens_indices):
            i += 1
        return i
