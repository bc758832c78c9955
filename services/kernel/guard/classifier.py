"""The learned layer: character 4-grams and word n-grams, TF-IDF, logistic regression — on CPU, offline.

The model is a vocabulary with two numbers per n-gram (idf, weight) and an intercept, shipped
as JSON in this package (``injection_model.json``, written by ``bench/guard_train.py``): no
pickle, no model download, no scikit-learn at run time. ``features`` is the analyzer the
trainer hands to scikit-learn's ``TfidfVectorizer`` as a callable, so training and serving
count exactly the same n-grams; scoring repeats TF-IDF (sublinear tf, L2 norm) and the
logistic function.

Serving does not build the n-gram strings: that loop (a Python string, a dict look-up and
float arithmetic per character) was most of the guard's latency. ``score`` hashes every
n-gram of the text at once with numpy — a polynomial hash over code points, modulo 2**64,
so a character 4-gram's hash is a difference of prefix sums and a word bigram's is composed
from its words' — and looks the hashes up in the vocabulary's hashes (sorted, computed once
at load with the same function in plain Python). Same features, same counts, same model:
``score_reference`` (the string path) is kept for the tests that pin the two together; a
64-bit collision between a text n-gram and one of ~10,000 vocabulary entries is ~1e-15 per
n-gram.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

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


_MASK: Final = (1 << 64) - 1
_BASE: Final = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_BASE_INV: Final = pow(_BASE, -1, 1 << 64)
_WORD_TAG: Final = 0xD6E8FEB86659FD93  # added to word features' hashes ("w:…"), apart from 4-grams
_U64 = npt.NDArray[np.uint64]
# ``scores`` packs the piece number into a hash's top bits: the low 54 bits are the same
# polynomial hash modulo 2**54 (its *low* bits are not mixed — the first character adds
# itself — so those are the ones to keep); a chance collision with the ~10,000 vocabulary
# hashes stays below 1e-12 per n-gram.
_PIECE_BITS: Final = 10
_HASH_BITS: Final = 64 - _PIECE_BITS
_MAX_PIECES: Final = 1 << _PIECE_BITS
_HASH: Final = np.uint64((1 << _HASH_BITS) - 1)


def _code(c: str) -> int:
    return ord(c) + 1  # never 0, so "a" and "a\x00" differ


def _polynomial(text: str) -> int:
    value = 0
    power = 1
    for c in text:
        value = (value + _code(c) * power) & _MASK
        power = (power * _BASE) & _MASK
    return value


def feature_hashes(feature: str) -> list[int]:
    """The hashes ``score`` computes for an n-gram of ``features`` (plain Python, for the
    vocabulary). A string like "w: p" is both a character 4-gram ("now: print") and, read as
    a word feature, one that cannot occur; "w:ab" is both a 4-gram and the word "ab" — the
    string model counts them as one feature, so both hashes point at it."""
    hashes = []
    if len(feature) == CHAR_N:
        hashes.append(_polynomial(feature))
    if feature.startswith("w:") and _WORD.fullmatch(feature[2:].replace(" ", "_", 1)):
        hashes.append((_polynomial(feature[2:]) + _WORD_TAG) & _MASK)
    return hashes


class _Powers:
    """``_BASE**i`` and ``_BASE_INV**i`` modulo 2**64 for i < n, grown on demand."""

    def __init__(self) -> None:
        self.up: _U64 = np.ones(1, dtype=np.uint64)
        self.down: _U64 = np.ones(1, dtype=np.uint64)

    def ensure(self, n: int) -> None:
        if n <= len(self.up):
            return
        size = max(n, 2 * len(self.up), 4096)
        up, down, p, q = [], [], 1, 1
        for _ in range(size):
            up.append(p)
            down.append(q)
            p = (p * _BASE) & _MASK
            q = (q * _BASE_INV) & _MASK
        self.up = np.array(up, dtype=np.uint64)
        self.down = np.array(down, dtype=np.uint64)


_POWERS: Final = _Powers()


_WORD_TABLE_SIZE: Final = 0x3000  # Latin, Greek, Cyrillic and the punctuation blocks: looked up
_WORD_TABLE: Final = np.array([bool(_WORD.match(chr(c))) for c in range(_WORD_TABLE_SIZE)], dtype=bool)


def _is_word(codes: _U64) -> npt.NDArray[np.bool_]:
    """Which characters ``\\w`` matches (``codes`` are code points + 1)."""
    points = codes - np.uint64(1)
    inside = points < _WORD_TABLE_SIZE
    mask = _WORD_TABLE[np.where(inside, points, 0)]
    if not inside.all():  # rarer scripts, emoji: ask the regex engine, per character
        for i in np.flatnonzero(~inside):
            mask[i] = bool(_WORD.match(chr(int(points[i]))))
    return mask


def _hashes(pieces: Sequence[str]) -> tuple[_U64, npt.NDArray[np.intp]]:
    """The hashes of ``features(piece)`` for every piece, and which piece each came from — in
    one pass of array arithmetic over all pieces (see the module docstring)."""
    padded = [f" {piece} " for piece in pieces]
    joined = "".join(padded)
    n = len(joined)
    _POWERS.ensure(n + 2)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(codes * _POWERS.up[:n], out=prefix[1:])  # wraps modulo 2**64, as meant
    up, down = _POWERS.up, _POWERS.down
    lengths = np.array([len(pad) for pad in padded], dtype=np.intp)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    owner_of = np.repeat(np.arange(len(pieces)), lengths)  # piece of every character
    # 4-grams start at every position that leaves four characters inside its piece
    starts = np.flatnonzero(np.arange(n) + CHAR_N <= (offsets + lengths)[owner_of])
    grams = (prefix[starts + CHAR_N] - prefix[starts]) * down[starts]
    owners = owner_of[starts]
    # words (runs of \w; the pads are spaces, so no word crosses a piece) from a character mask
    is_word = _is_word(codes)
    edges = np.diff(is_word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    begin = np.flatnonzero(edges == 1)
    end = np.flatnonzero(edges == -1)
    if not len(begin):
        return grams, owners
    words = (prefix[end] - prefix[begin]) * down[begin]
    word_of = owner_of[begin]
    # "a b" = a + B**len(a) * (" " + B * b), for neighbours within one piece
    pair = word_of[:-1] == word_of[1:]
    first_lengths = (end - begin)[:-1][pair]
    bigrams = words[:-1][pair] + up[first_lengths] * (np.uint64(_code(" ")) + np.uint64(_BASE) * words[1:][pair])
    tag = np.uint64(_WORD_TAG)
    return (np.concatenate((grams, words + tag, bigrams + tag)),
            np.concatenate((owners, word_of, word_of[:-1][pair])))


@dataclass(frozen=True, slots=True)
class LinearModel:
    table: dict[str, tuple[float, float]]  # n-gram -> (idf, weight)
    intercept: float
    version: str
    # The vocabulary by hash, sorted, with idf and weight in the same order (built at load).
    _keys: _U64 = field(init=False, repr=False, compare=False)
    _idf: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _weight: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rows = sorted((h & ((1 << _HASH_BITS) - 1), v[0], v[1]) for k, v in self.table.items()
                      for h in feature_hashes(k))
        keys = np.array([r[0] & ((1 << _HASH_BITS) - 1) for r in rows], dtype=np.uint64)
        if len(np.unique(keys)) != len(keys):
            raise ValueError("guard model: two n-grams share a hash")
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_idf", np.array([r[1] for r in rows], dtype=np.float64))
        object.__setattr__(self, "_weight", np.array([r[2] for r in rows], dtype=np.float64))

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
        return self.scores([folded])[0]

    def scores(self, pieces: Sequence[str]) -> list[float]:
        """``score`` of each piece, computed together (one round of array operations)."""
        if len(pieces) > _MAX_PIECES:
            return [v for i in range(0, len(pieces), _MAX_PIECES) for v in self.scores(pieces[i:i + _MAX_PIECES])]
        keys = self._keys
        if not pieces:
            return []
        if not len(keys):
            return [_sigmoid(self.intercept)] * len(pieces)
        hashes, owners = _hashes(pieces)
        # Term frequency per (piece, n-gram): the piece rides in the hash's top bits (the
        # vocabulary's hashes have them cleared), so one sort groups both, then count the runs.
        packed = np.sort((hashes & _HASH) | (owners.astype(np.uint64) << np.uint64(_HASH_BITS)))
        first = np.empty(len(packed), dtype=bool)
        first[:1] = True
        np.not_equal(packed[1:], packed[:-1], out=first[1:])
        run_starts = np.flatnonzero(first)
        counts = np.diff(run_starts, append=len(packed))
        packed = packed[run_starts]
        grams = packed & _HASH
        where = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
        known = keys[where] == grams
        where = where[known]
        owner = (packed[known] >> np.uint64(_HASH_BITS)).astype(np.intp)
        values = self._idf[where] * (1.0 + np.log(counts[known]))  # sublinear tf
        norms = np.bincount(owner, weights=values * values, minlength=len(pieces)).tolist()
        dots = np.bincount(owner, weights=values * self._weight[where], minlength=len(pieces)).tolist()
        return [_sigmoid(d / math.sqrt(m) + self.intercept) if m else _sigmoid(self.intercept)
                for d, m in zip(dots, norms, strict=True)]

    def max_scores(self, texts: Sequence[str]) -> list[float]:
        """For each folded text, the highest score over its segments (all scored together)."""
        pieces: list[str] = []
        owner: list[int] = []
        for index, text in enumerate(texts):
            for piece in segments(text):
                pieces.append(piece)
                owner.append(index)
        best = [0.0] * len(texts)
        for index, value in zip(owner, self.scores(pieces), strict=True):
            best[index] = max(best[index], value)
        return best

    def score_reference(self, folded: str) -> float:
        """``score`` over the n-gram strings — how the trainer counts; kept to test ``score`` against."""
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
        return self.max_scores([folded])[0]


def _sigmoid(x: float) -> float:
    if x < -40:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


@cache
def load_model(path: Path = MODEL_FILE) -> LinearModel:
    return LinearModel.from_json(json.loads(path.read_text(encoding="utf-8")))
