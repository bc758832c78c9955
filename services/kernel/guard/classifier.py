"""The learned layer: character 4-grams and word n-grams, TF-IDF, logistic regression — on CPU, offline.

The model is a vocabulary with two numbers per n-gram (idf, weight) and an intercept, shipped
as JSON in this package (``injection_model.json``, written by ``bench/guard_train.py``): no
pickle, no model download, no scikit-learn at run time. ``features`` is the analyzer the
trainer hands to scikit-learn's ``TfidfVectorizer`` as a callable, so training and serving
count exactly the same n-grams; scoring repeats TF-IDF (sublinear tf, L2 norm) and the
logistic function in plain Python.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

MODEL_FILE: Final = Path(__file__).with_name("injection_model.json")
FORMAT: Final = "stellwerk-guard-linear/1"
CHAR_N: Final = 4
_WORD: Final = re.compile(r"\w+")
# Long texts are scored in segments of about this many characters (sentence boundaries):
# an instruction hidden in a long document must not be diluted by the L2 norm of the rest.
SEGMENT_CHARS: Final = 400
_SENTENCE_END: Final = re.compile(r"(?<=[.!?:;\n])\s+")


def features(folded: str) -> list[str]:
    """Character 4-grams of the folded text (across word boundaries: "re a", "ll p") plus
    word unigrams and bigrams (``w:``)."""
    padded = f" {folded} "
    out = [padded[i:i + CHAR_N] for i in range(len(padded) - CHAR_N + 1)]
    words = _WORD.findall(folded)
    out.extend("w:" + w for w in words)
    out.extend(f"w:{a} {b}" for a, b in itertools.pairwise(words))
    return out


def segments(folded: str, size: int = SEGMENT_CHARS) -> list[str]:
    """``folded`` cut at sentence ends into pieces of about ``size`` characters."""
    if len(folded) <= size:
        return [folded]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(folded):
        if current and len(current) + len(sentence) + 1 > size:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
        while len(current) > 2 * size:  # one endless "sentence"
            pieces.append(current[:size])
            current = current[size:]
    if current:
        pieces.append(current)
    return pieces


@dataclass(frozen=True, slots=True)
class LinearModel:
    table: dict[str, tuple[float, float]]  # n-gram -> (idf, weight)
    intercept: float
    version: str

    @classmethod
    def from_json(cls, document: dict[str, object]) -> LinearModel:
        if document.get("format") != FORMAT:
            raise ValueError("not a stellwerk guard model")
        table = document["features"]
        intercept = document["intercept"]
        version = document.get("version", "unversioned")
        if not isinstance(table, dict) or not isinstance(intercept, float | int):
            raise ValueError("malformed guard model")
        return cls({str(k): (float(v[0]), float(v[1])) for k, v in table.items()}, float(intercept), str(version))

    def score(self, folded: str) -> float:
        """Probability that ``folded`` text is an injection or jailbreak attempt."""
        table = self.table
        norm = 0.0
        dot = 0.0
        for feature, tf in Counter(features(folded)).items():  # Counter counts in C
            entry = table.get(feature)
            if entry is None:
                continue
            value = entry[0] if tf == 1 else (1.0 + math.log(tf)) * entry[0]
            norm += value * value
            dot += value * entry[1]
        if not norm:
            return _sigmoid(self.intercept)
        return _sigmoid(dot / math.sqrt(norm) + self.intercept)

    def max_score(self, folded: str) -> float:
        return max(self.score(piece) for piece in segments(folded))


def _sigmoid(x: float) -> float:
    if x < -40:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


@cache
def load_model(path: Path = MODEL_FILE) -> LinearModel:
    return LinearModel.from_json(json.loads(path.read_text(encoding="utf-8")))
