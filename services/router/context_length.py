"""Prompt token counting and the context-length bucket, strictly offline.

tiktoken normally downloads its BPE files on first use. LiteLLM ships the OpenAI files in
``litellm/litellm_core_utils/tokenizers/`` under tiktoken's cache names (SHA-1 of the
download URL) and points ``TIKTOKEN_CACHE_DIR`` there when *it* is imported. The router
must not depend on that import (2 s, side effects) nor on the environment, so it locates
the directory without importing litellm, verifies the file's SHA-256 itself, and only then
lets tiktoken load it from that cache. A missing or altered file raises
``TokenizerUnavailable``; tiktoken's download path is never reached.

The bucket exists to compare a prompt against the *local* deployment's context limit, so
the default encoding is the local model's: Llama 3's tokenizer extends cl100k_base's
100k merges, so cl100k_base counts it closely. ``o200k_base`` is GPT-4o/GPT-5's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import tiktoken

from schemas.events import ChatMessage
from schemas.vocabulary import ContextLengthBucket

DEFAULT_ENCODING: Final = "cl100k_base"

# Bucket limits in tokens: "<8k" is fewer than 8192, "8-32k" is 8192 up to and including
# 32768, ">32k" is more than 32768 (context windows are powers of two).
SMALL_LIMIT: Final = 8 * 1024
MEDIUM_LIMIT: Final = 32 * 1024

# OpenAI's chat format frames every message with <|start|>role ... <|end|> (3 tokens plus
# the role), and the reply is primed with 3 more. Same accounting as OpenAI's cookbook.
TOKENS_PER_MESSAGE: Final = 3
TOKENS_REPLY_PRIMING: Final = 3

# name → (tiktoken cache file name = sha1(download URL), SHA-256 tiktoken expects).
# The hashes are tiktoken_ext.openai_public's; only encodings LiteLLM bundles are listed.
_BUNDLED: Final[dict[str, tuple[str, str]]] = {
    "cl100k_base": (
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "fb374d419588a4632f3f557e76b4b70aebbca790",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "p50k_base": (
        "ec7223a39ce59f226a68acc30dc1af2788490e15",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
}

_load_lock = threading.Lock()


class TokenizerUnavailable(RuntimeError):
    """The encoding's BPE file is not available offline (never downloaded instead)."""


def bundled_tokenizer_dir() -> Path:
    """LiteLLM's tokenizer directory, found without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("litellm (which ships the BPE files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


@cache
def load_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` from LiteLLM's bundled files; cached per process."""
    if name not in _BUNDLED:
        raise TokenizerUnavailable(f"no bundled BPE file for encoding {name!r}")
    file_name, sha256 = _BUNDLED[name]
    directory = bundled_tokenizer_dir()
    try:
        raw = (directory / file_name).read_bytes()
    except OSError as exc:
        raise TokenizerUnavailable(f"bundled BPE file for {name!r} is missing") from exc
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise TokenizerUnavailable(f"bundled BPE file for {name!r} does not match its hash")
    # tiktoken reads its cache directory from the environment at load time. With the file
    # verified above it returns the cached bytes before its download branch; the variable is
    # restored so the process environment is left as found.
    with _load_lock:
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        try:
            return tiktoken.get_encoding(name)
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


def count_prompt_tokens(messages: Sequence[ChatMessage], encoding: tiktoken.Encoding) -> int:
    """Prompt tokens of a chat request as the model sees it, framing included.

    ``encode_ordinary`` treats special-token text in user content as plain text: counting
    must neither fail on it nor let a prompt smuggle control tokens into the count.
    """
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + len(encoding.encode_ordinary(message.role))
        total += len(encoding.encode_ordinary(message.content))
    return total


def bucket_for(tokens: int) -> ContextLengthBucket:
    if tokens < SMALL_LIMIT:
        return "<8k"
    if tokens <= MEDIUM_LIMIT:
        return "8-32k"
    return ">32k"


@dataclass(frozen=True, slots=True)
class PromptSize:
    tokens: int
    bucket: ContextLengthBucket


def measure_prompt(messages: Sequence[ChatMessage], encoding_name: str = DEFAULT_ENCODING) -> PromptSize:
    """Token count and bucket of a prompt (the count fills ``prompt_tokens_estimate``)."""
    tokens = count_prompt_tokens(messages, load_encoding(encoding_name))
    return PromptSize(tokens=tokens, bucket=bucket_for(tokens))


def context_bucket(messages: Sequence[ChatMessage], encoding_name: str = DEFAULT_ENCODING) -> ContextLengthBucket:
    return measure_prompt(messages, encoding_name).bucket
