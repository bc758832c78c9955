"""The one token counter (services/kernel/tokens.py) every service uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiktoken

from schemas.events import ChatMessage as EventMessage
from services.gateway.limits import estimate_prompt_tokens as gateway_estimate
from services.gateway.ratelimit import estimate_tokens as ratelimit_estimate
from services.kernel import tokens
from services.router.context_length import count_prompt_tokens as router_count
from services.simulator.protocol import ChatMessage as WireMessage
from services.simulator.tokenizer import count_prompt_tokens as simulator_count

SAMPLES = ["hello world", "Grüße aus München 🎉", "def f(x):\n    return x**2\n", "<|endoftext|> 4711",
           "IBAN DE89 3704 0044 0532 0130 00, Tel. +49 171 2345678"]


@pytest.mark.parametrize("name", tokens.ENCODINGS)
def test_each_encoding_is_tiktokens_own(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiktoken's loader reads the same bundled table when pointed at LiteLLM's directory.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tokens.bundled_tokenizer_dir()))
    reference = tiktoken.get_encoding(name)
    ours = tokens.load_encoding(name)
    assert ours._pat_str == reference._pat_str
    assert ours._special_tokens == reference._special_tokens
    assert ours.n_vocab == reference.n_vocab
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)


def test_router_and_simulator_count_the_same_prompt_alike() -> None:
    encoding = tokens.load_encoding()
    turns = [("system", "Du bist ein hilfreicher Assistent."), ("user", SAMPLES[1]), ("assistant", SAMPLES[4])]
    routed = router_count([EventMessage(role=r, content=c) for r, c in turns], encoding)
    simulated = simulator_count(encoding, [WireMessage(r, c) for r, c in turns])
    expected = 3 + sum(3 + len(encoding.encode_ordinary(r)) + len(encoding.encode_ordinary(c)) for r, c in turns)
    assert routed == simulated == expected


def test_a_name_costs_one_token_plus_its_own() -> None:
    encoding = tokens.load_encoding()
    plain = tokens.count_chat_tokens(encoding, [("user", "hello world", None)])
    named = tokens.count_chat_tokens(encoding, [("user", "hello world", "erika")])
    assert plain == 3 + 3 + 1 + 2
    assert named == plain + 1 + len(encoding.encode_ordinary("erika"))


def test_the_gateways_cheap_estimates_are_the_kernels() -> None:
    texts = ["x" * 10, "", "y" * 401]
    assert tokens.estimate_prompt_tokens(texts) == (2 + 4) + (0 + 4) + (100 + 4)
    assert gateway_estimate(texts) == tokens.estimate_prompt_tokens(texts)
    messages = [EventMessage(role="user", content=t) for t in texts]
    assert ratelimit_estimate(messages, 50, 512) == tokens.estimate_prompt_tokens(texts) + 50


def test_tampered_table_is_refused_not_downloaded(tmp_path: Path) -> None:
    tokens.table_path("p50k_base", tmp_path).write_bytes(b"tampered")
    with pytest.raises(tokens.TokenizerUnavailable, match="hash"):
        tokens.encoding_from_dir("p50k_base", tmp_path)


def test_missing_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(tokens.TokenizerUnavailable, match="missing"):
        tokens.encoding_from_dir("p50k_base", tmp_path)


def test_unknown_encoding_is_unavailable() -> None:
    with pytest.raises(tokens.TokenizerUnavailable):
        tokens.load_encoding("gpt2")
