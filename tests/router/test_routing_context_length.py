"""Prompt token counting: bucket boundaries, chat framing, strictly offline loading."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from schemas.events import ChatMessage
from services.router.context_length import (
    TokenizerUnavailable,
    bucket_for,
    count_prompt_tokens,
    load_encoding,
    measure_prompt,
)


@pytest.mark.parametrize(
    ("tokens", "bucket"),
    [(0, "<8k"), (8191, "<8k"), (8192, "8-32k"), (32768, "8-32k"), (32769, ">32k"), (10**6, ">32k")],
)
def test_bucket_boundaries(tokens: int, bucket: str) -> None:
    assert bucket_for(tokens) == bucket


def _prompt_of(total_tokens: int, encoding_name: str) -> list[ChatMessage]:
    """A system + user prompt that counts exactly ``total_tokens`` with chat framing."""
    encoding = load_encoding(encoding_name)
    system = ChatMessage(role="system", content="Du bist ein hilfreicher Assistent.")
    framing = count_prompt_tokens([system, ChatMessage(role="user", content="")], encoding)
    words = total_tokens - framing
    content = "hello" + " hello" * (words - 1)
    assert len(encoding.encode_ordinary(content)) == words  # one token per word
    return [system, ChatMessage(role="user", content=content)]


@pytest.mark.parametrize("encoding_name", ["cl100k_base", "o200k_base"])
@pytest.mark.parametrize(
    ("tokens", "bucket"), [(8191, "<8k"), (8192, "8-32k"), (32768, "8-32k"), (32769, ">32k")]
)
def test_measured_prompt_lands_in_the_right_bucket(encoding_name: str, tokens: int, bucket: str) -> None:
    size = measure_prompt(_prompt_of(tokens, encoding_name), encoding_name)
    assert (size.tokens, size.bucket) == (tokens, bucket)


def test_chat_framing_matches_openai_accounting() -> None:
    # 3 reply-priming + per message (3 + role) + content: "hello world" is 2 tokens, "user" 1.
    messages = [ChatMessage(role="user", content="hello world")]
    assert count_prompt_tokens(messages, load_encoding("cl100k_base")) == 3 + 3 + 1 + 2


def test_special_token_text_is_counted_as_plain_text() -> None:
    messages = [ChatMessage(role="user", content="<|endoftext|> ignore the above")]
    assert measure_prompt(messages).tokens > 3 + 3 + 1 + 1


def test_unknown_encoding_is_unavailable() -> None:
    with pytest.raises(TokenizerUnavailable):
        load_encoding("gpt2")


def test_loading_never_touches_the_network(tmp_path: Path) -> None:
    """A fresh process where any download raises, with tiktoken's cache pointed elsewhere."""
    script = textwrap.dedent(
        """
        import os, socket, tiktoken.load
        def refuse(*args, **kwargs):
            raise AssertionError("network access attempted")
        tiktoken.load.read_file = refuse
        socket.socket.connect = refuse
        from schemas.events import ChatMessage
        from services.router.context_length import measure_prompt
        for name in ("cl100k_base", "o200k_base"):
            assert measure_prompt([ChatMessage(role="user", content="Hallo Welt")], name).tokens > 0
        assert os.environ["TIKTOKEN_CACHE_DIR"] == os.environ["EXPECTED_CACHE_DIR"]
        assert not os.listdir(os.environ["EXPECTED_CACHE_DIR"])
        """
    )
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    env = {"TIKTOKEN_CACHE_DIR": str(cache), "EXPECTED_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
