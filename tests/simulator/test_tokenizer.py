from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiktoken

from services.simulator.protocol import ChatMessage, ContentPart
from services.simulator.tokenizer import (
    TokenizerUnavailableError,
    bundled_cl100k_path,
    cl100k,
    count_prompt_tokens,
    load_encoding_from,
)


def test_bundled_table_is_litellms_copy() -> None:
    path = bundled_cl100k_path()
    assert path.is_file()
    assert path.parent.name == "tokenizers"
    assert "litellm" in path.parts


def test_matches_tiktokens_own_cl100k(monkeypatch: pytest.MonkeyPatch) -> None:
    # tiktoken's loader reads the same file when pointed at LiteLLM's directory (no download).
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(bundled_cl100k_path().parent))
    reference = tiktoken.get_encoding("cl100k_base")
    ours = cl100k()
    assert ours._mergeable_ranks == reference._mergeable_ranks
    assert ours._special_tokens == reference._special_tokens
    for text in ["hello world", "Grüße aus München 🎉", "def f(x):\n    return x**2\n", "<|endoftext|>"]:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)


def test_loads_with_network_unreachable_and_without_importing_litellm() -> None:
    # A fresh interpreter where any socket use fails and no tiktoken cache dir is configured:
    # the encoding must still build, from the bundled file only.
    script = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise OSError("network disabled by test")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from services.simulator.tokenizer import cl100k
        assert cl100k().encode_ordinary("hello world") == [15339, 1917]
        assert "litellm" not in sys.modules, "litellm was imported"
        assert "requests" not in sys.modules, "a download path was taken"
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in {"TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"}}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_corrupt_table_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "cl100k"
    bad.write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(TokenizerUnavailableError):
        load_encoding_from(bad)


def test_prompt_count_matches_openai_cookbook_example() -> None:
    # The "How to count tokens with tiktoken" cookbook reports 129 prompt tokens for this
    # conversation on gpt-3.5-turbo-0613 / gpt-4-0613 (cl100k_base).
    messages = [
        ChatMessage(
            "system",
            "You are a helpful, pattern-following assistant that translates corporate jargon "
            "into plain English.",
        ),
        ChatMessage("system", "New synergies will help drive top-line growth.", name="example_user"),
        ChatMessage(
            "system", "Things working well together will increase revenue.", name="example_assistant"
        ),
        ChatMessage(
            "system",
            "Let's circle back when we have more bandwidth to touch base on opportunities for "
            "increased leverage.",
            name="example_user",
        ),
        ChatMessage(
            "system",
            "Let's talk later when we're less busy about how to do better.",
            name="example_assistant",
        ),
        ChatMessage(
            "user",
            "This late pivot means we don't have time to boil the ocean for the client deliverable.",
        ),
    ]
    assert count_prompt_tokens(cl100k(), messages) == 129


def test_multipart_content_counts_text_parts_only() -> None:
    encoding = cl100k()
    parts = [ContentPart("text", "hello "), ContentPart("image_url"), ContentPart("text", "world")]
    multipart = count_prompt_tokens(encoding, [ChatMessage("user", parts)])
    plain = count_prompt_tokens(encoding, [ChatMessage("user", "hello world")])
    assert multipart == plain
    assert count_prompt_tokens(encoding, [ChatMessage("assistant", None)]) == 3 + 3 + 1
