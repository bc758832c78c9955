"""Prompt token counting and the context-length bucket, strictly offline.

The counting itself is the shared kernel's (``services/kernel/tokens.py``: LiteLLM's bundled
BPE tables, verified, never downloaded; OpenAI's chat framing), the same the simulator uses.
The bucket exists to compare a prompt against the *local* deployment's context limit, so the
default encoding is the local model's, ``cl100k_base`` (Llama 3's tokenizer extends its 100k
merges, so it counts it closely). ``o200k_base`` is GPT-4o/GPT-5's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import tiktoken

from schemas.events import ChatMessage
from schemas.vocabulary import ContextLengthBucket
from services.kernel.tokens import (
    DEFAULT_ENCODING,
    TokenizerUnavailable,
    bundled_tokenizer_dir,
    count_chat_tokens,
    load_encoding,
)

__all__ = [
    "DEFAULT_ENCODING",
    "MEDIUM_LIMIT",
    "SMALL_LIMIT",
    "PromptSize",
    "TokenizerUnavailable",
    "bucket_for",
    "bundled_tokenizer_dir",
    "context_bucket",
    "count_prompt_tokens",
    "load_encoding",
    "measure_prompt",
]

# Bucket limits in tokens: "<8k" is fewer than 8192, "8-32k" is 8192 up to and including
# 32768, ">32k" is more than 32768 (context windows are powers of two).
SMALL_LIMIT: Final = 8 * 1024
MEDIUM_LIMIT: Final = 32 * 1024


def count_prompt_tokens(messages: Sequence[ChatMessage], encoding: tiktoken.Encoding) -> int:
    """Prompt tokens of a chat request as the model sees it, framing included."""
    return count_chat_tokens(encoding, ((m.role, m.content, None) for m in messages))


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
