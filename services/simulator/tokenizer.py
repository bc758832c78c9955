"""Real ``cl100k_base`` token counts, built strictly offline.

The tokenizer and the chat framing are the shared kernel's (``services/kernel/tokens.py``):
the table LiteLLM ships, verified against tiktoken's published SHA-256 and built into an
``Encoding`` directly — no download path, no environment variable touched, ``litellm`` itself
never imported (only located). This module adapts the simulator's OpenAI wire messages
(multi-part content, ``name``) to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tiktoken

from services.kernel import tokens
from services.simulator.protocol import ChatMessage

# The simulator's name for the kernel's error (a missing or corrupt table: it refuses to guess).
TokenizerUnavailableError = tokens.TokenizerUnavailable


def bundled_cl100k_path() -> Path:
    return tokens.table_path("cl100k_base", tokens.bundled_tokenizer_dir())


def load_encoding_from(path: Path) -> tiktoken.Encoding:
    return tokens.encoding_from_file("cl100k_base", path)


def cl100k() -> tiktoken.Encoding:
    """The process-wide encoding (built once; shared by every app in the process)."""
    return tokens.load_encoding("cl100k_base")


def message_text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multi-part content: only text parts carry tokens the simulator can count.
    return "".join(part.text for part in content if part.text is not None)


def counted_text(message: ChatMessage) -> str:
    """The text a message's tokens are counted on: its content, then the name and arguments of
    each tool call it carries (an assistant turn that called tools)."""
    text = message_text(message)
    if message.tool_calls:
        text += "".join(call.function.name + call.function.arguments for call in message.tool_calls)
    return text


def count_prompt_tokens(encoding: tiktoken.Encoding, messages: Sequence[ChatMessage]) -> int:
    """3 + Σ over messages of (3 + tokens(role) + tokens(text) [+ 1 + tokens(name)])."""
    return tokens.count_chat_tokens(encoding, ((m.role, counted_text(m), m.name) for m in messages))
