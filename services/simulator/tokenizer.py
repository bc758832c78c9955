"""Real ``cl100k_base`` token counts, built strictly offline.

tiktoken's own ``get_encoding`` resolves the BPE table by URL and downloads it when the
cache file is missing or fails its hash check (and deletes the mismatching file first).
To rule that out, the table is read here directly from the copy LiteLLM ships in its
package (the file is named after the SHA-1 of tiktoken's URL, which is how LiteLLM points
``TIKTOKEN_CACHE_DIR`` at it), verified against tiktoken's published SHA-256, and the
``Encoding`` is constructed from it. No environment variable is touched and ``litellm``
itself is never imported (it costs ~2 s), only located.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import tiktoken

from services.simulator.protocol import ChatMessage

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# Copied from tiktoken_ext.openai_public.cl100k_base, whose function would trigger the URL load.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

# OpenAI's published rule for chat models (gpt-3.5-turbo-0613 and later, gpt-4):
# every message is wrapped as <|start|>{role/name}\n{content}<|end|>\n (3 tokens of frame),
# a ``name`` costs 1 more, and every reply is primed with <|start|>assistant<|message|> (3).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


class TokenizerUnavailableError(RuntimeError):
    """The bundled BPE table is missing or corrupt; the simulator refuses to guess counts."""


def bundled_cl100k_path() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailableError("litellm is not installed; it ships the cl100k_base table")
    cache_key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return package_dir / "litellm_core_utils" / "tokenizers" / cache_key


def load_encoding_from(path: Path) -> tiktoken.Encoding:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerUnavailableError(f"cannot read BPE table {path}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise TokenizerUnavailableError(f"BPE table {path} does not match cl100k_base's SHA-256")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        "cl100k_base",
        pat_str=CL100K_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens=CL100K_SPECIAL_TOKENS,
    )


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """The process-wide encoding (~0.1 s to build once; shared by every app in the process)."""
    return load_encoding_from(bundled_cl100k_path())


def message_text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multi-part content: only text parts carry tokens the simulator can count.
    return "".join(part.text for part in content if part.text is not None)


def count_prompt_tokens(encoding: tiktoken.Encoding, messages: Sequence[ChatMessage]) -> int:
    """3 + Σ over messages of (3 + tokens(role) + tokens(text) [+ 1 + tokens(name)])."""
    # encode_ordinary: user text that spells "<|endoftext|>" is text, not a special token.
    encode = encoding.encode_ordinary
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + len(encode(message.role)) + len(encode(message_text(message)))
        if message.name is not None:
            total += TOKENS_PER_NAME + len(encode(message.name))
    return total
