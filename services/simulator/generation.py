"""What the simulated model answers, and how that answer is cut into streamed pieces."""

from __future__ import annotations

import base64
import binascii
import codecs
from collections.abc import Iterator, Sequence

import tiktoken

from services.simulator.protocol import ChatMessage
from services.simulator.settings import Mode
from services.simulator.tokenizer import message_text


class AnswerSource:
    def __init__(self, encoding: tiktoken.Encoding, mode: Mode, canned_text: str) -> None:
        self._encoding = encoding
        self._mode = mode
        self._canned_text = canned_text
        # Canned answers are the same every time: tokenize once.
        self._canned_tokens = encoding.encode_ordinary(canned_text)

    def answer(self, messages: Sequence[ChatMessage]) -> tuple[str, list[int]]:
        if self._mode is Mode.CANNED:
            return self._canned_text, self._canned_tokens
        text = ""
        for message in reversed(messages):
            if message.role == "user":
                text = echoed(message_text(message))
                break
        return text, self._encoding.encode_ordinary(text)


ECHO_B64 = "echo-b64:"


def echoed(prompt: str) -> str:
    """What echo mode answers: the prompt — or, for ``echo-b64:<base64>``, the decoded text.

    The second form lets tests make the *model* emit personal data that the prompt did not
    contain in clear (input screening sees only base64), to exercise output screening."""
    if prompt.startswith(ECHO_B64):
        try:
            return base64.b64decode(prompt[len(ECHO_B64):].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return prompt
    return prompt


def in_pieces(pieces: Iterator[str], chars: int) -> Iterator[str]:
    """Re-cut streamed pieces into pieces of ``chars`` characters (0: unchanged)."""
    if chars <= 0:
        yield from pieces
        return
    for piece in pieces:
        for start in range(0, len(piece), chars):
            yield piece[start : start + chars]


def truncate(
    encoding: tiktoken.Encoding, text: str, tokens: list[int], limit: int
) -> tuple[str, list[int], str]:
    """Answer text, its tokens and the finish reason after applying the token limit."""
    if len(tokens) <= limit:
        return text, tokens, "stop"
    kept = tokens[:limit]
    # A cut inside a multi-byte character decodes to U+FFFD, as the streamed pieces do.
    return encoding.decode(kept), kept, "length"


def stream_pieces(encoding: tiktoken.Encoding, tokens: Sequence[int]) -> Iterator[str]:
    """One text piece per token; a token ending mid-character yields "" and the next carries it.

    Joined, the pieces equal ``encoding.decode(tokens)`` (same UTF-8 replacement rules).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        yield decoder.decode(encoding.decode_single_token_bytes(token), final=index == last)
