"""Deterministic embedding vectors: identical input, identical vector; different input, another.

A vector is SHAKE-256 of the input stretched to ``dims`` 32-bit words, mapped to [-1, 1) and
scaled to unit length. ``dimensions`` below the full size keeps the leading components and
scales them to unit length again, as OpenAI's text-embedding-3 models shorten embeddings.
Values are float32, so the ``float`` and ``base64`` encodings carry exactly the same numbers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array


def vector(key: bytes, dims: int) -> array[float]:
    # SHAKE output is prefix-stable: a shorter vector is the leading part of a longer one.
    words = array("I")
    assert words.itemsize == 4
    words.frombytes(hashlib.shake_256(key).digest(4 * dims))
    if sys.byteorder == "big":
        words.byteswap()
    # word / 2**31 - 1 lies in [-1, 1).
    components = [word / 2_147_483_648.0 - 1.0 for word in words]
    norm = math.sqrt(math.fsum(c * c for c in components)) or 1.0
    return array("f", [c / norm for c in components])


def text_key(text: str) -> bytes:
    return b"text\x00" + text.encode()


def token_key(token_ids: list[int]) -> bytes:
    return b"tokens\x00" + ",".join(map(str, token_ids)).encode()


def as_base64(values: array[float]) -> str:
    """Little-endian float32, base64 — OpenAI's ``encoding_format: "base64"``."""
    if sys.byteorder == "big":
        values = array("f", values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()
