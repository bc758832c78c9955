"""Token counting for every service: one tokenizer, one chat framing, one cheap estimate.

Exact counts use tiktoken's BPE tables, strictly offline. tiktoken's own ``get_encoding``
resolves a table by URL and downloads it when its cache file is missing or fails the hash
check. LiteLLM ships the OpenAI tables in ``litellm/litellm_core_utils/tokenizers/`` under
tiktoken's cache names (SHA-1 of the download URL); they are located here without importing
litellm (~2 s, side effects), verified against tiktoken's published SHA-256, and the
``Encoding`` is built from them directly — no environment variable is touched, nothing is
written, no download path exists. A missing or altered table raises ``TokenizerUnavailable``.

``cl100k_base`` is the default: the local model's (Llama 3's tokenizer extends cl100k_base's
100k merges, so it counts it closely) and the simulator's. ``o200k_base`` is GPT-4o/GPT-5's.

The chat framing is OpenAI's published rule (gpt-3.5-turbo-0613 and later, gpt-4): every
message is ``<|start|>{role/name}\\n{content}<|end|>\\n`` (3 tokens of frame plus the role),
a ``name`` costs 1 more plus its tokens, and the reply is primed with 3. Text is encoded with
``encode_ordinary``: user text that spells ``<|endoftext|>`` is text, never a control token.

Where no tokenizer is worth its cost (the gateway charging a rate limit before anything is
screened), :func:`estimate_prompt_tokens` is the one cheap estimate: characters / 4 plus 4
per message for the template.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import tiktoken

DEFAULT_ENCODING: Final = "cl100k_base"

TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
TOKENS_REPLY_PRIMING: Final = 3

# The cheap estimate (no tokenizer): what the gateway charges rate limits with.
CHARS_PER_TOKEN: Final = 4
ESTIMATED_TOKENS_PER_MESSAGE: Final = 4

_ENDOFTEXT: Final = "<|endoftext|>"
_ENDOFPROMPT: Final = "<|endofprompt|>"


@dataclass(frozen=True, slots=True)
class _Table:
    url: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]
    explicit_n_vocab: int | None = None

    @property
    def cache_name(self) -> str:
        """tiktoken's cache file name for the table (SHA-1 of its URL); LiteLLM uses it too."""
        return hashlib.sha1(self.url.encode()).hexdigest()


_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
# Patterns, special tokens and hashes as in tiktoken_ext.openai_public (whose constructors
# would take the URL path); tests/unit/test_tokens.py checks them against tiktoken's own.
_R50K_PAT: Final = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
_CL100K_PAT: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT: Final = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_TABLES: Final[dict[str, _Table]] = {
    "cl100k_base": _Table(
        url=_BASE + "cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PAT,
        special_tokens={_ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                        "<|fim_suffix|>": 100260, _ENDOFPROMPT: 100276},
    ),
    "o200k_base": _Table(
        url=_BASE + "o200k_base.tiktoken",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PAT,
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
    "p50k_base": _Table(
        url=_BASE + "p50k_base.tiktoken",
        sha256="94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
        pat_str=_R50K_PAT,
        special_tokens={_ENDOFTEXT: 50256},
        explicit_n_vocab=50281,
    ),
}
ENCODINGS: Final = tuple(_TABLES)

# A chat turn as counted: (role, text, name or None).
Turn = tuple[str, str, str | None]


class TokenizerUnavailable(RuntimeError):
    """The encoding's BPE table is not available offline (never downloaded instead)."""


def bundled_tokenizer_dir() -> Path:
    """LiteLLM's tokenizer directory, found without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("litellm (which ships the BPE tables) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


def table_path(name: str, directory: Path) -> Path:
    """Where encoding ``name``'s table lies in ``directory`` (tiktoken's cache name)."""
    return directory / _table(name).cache_name


def encoding_from_file(name: str, path: Path) -> tiktoken.Encoding:
    """Encoding ``name`` built from the table at ``path``, after checking its SHA-256."""
    table = _table(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerUnavailable(f"the BPE table for {name!r} is missing or unreadable") from exc
    if hashlib.sha256(data).hexdigest() != table.sha256:
        raise TokenizerUnavailable(f"the BPE table for {name!r} does not match its hash")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name,
        pat_str=table.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(table.special_tokens),
        explicit_n_vocab=table.explicit_n_vocab,
    )


def encoding_from_dir(name: str, directory: Path) -> tiktoken.Encoding:
    return encoding_from_file(name, table_path(name, directory))


@cache
def load_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """The encoding ``name`` from LiteLLM's bundled tables; built once per process (~0.1 s)."""
    return encoding_from_dir(name, bundled_tokenizer_dir())


def count_chat_tokens(encoding: tiktoken.Encoding, turns: Iterable[Turn]) -> int:
    """Prompt tokens of a chat as the model sees it:
    3 + Σ (3 + tokens(role) + tokens(text) [+ 1 + tokens(name)])."""
    encode = encoding.encode_ordinary
    total = TOKENS_REPLY_PRIMING
    for role, text, name in turns:
        total += TOKENS_PER_MESSAGE + len(encode(role)) + len(encode(text))
        if name is not None:
            total += TOKENS_PER_NAME + len(encode(name))
    return total


def estimate_prompt_tokens(texts: Iterable[str]) -> int:
    """The cheap estimate, no tokenizer: Σ (characters // 4 + 4) over the messages' texts."""
    return sum(len(text) // CHARS_PER_TOKEN + ESTIMATED_TOKENS_PER_MESSAGE for text in texts)


def _table(name: str) -> _Table:
    try:
        return _TABLES[name]
    except KeyError:
        raise TokenizerUnavailable(f"no bundled BPE table for encoding {name!r}") from None
