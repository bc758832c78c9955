from __future__ import annotations

import pydantic
import pytest

from services.simulator.cli import parse_settings
from services.simulator.settings import Mode


def test_flags_map_onto_settings() -> None:
    settings = parse_settings(
        [
            "--name", "external-api", "--host", "0.0.0.0", "--port", "8102",
            "--model", "gpt-4o-mini", "--mode", "canned", "--canned-text", "ok",
            "--ttft-ms", "150", "--itl-ms", "12.5", "--max-num-seqs", "8",
            "--kv-capacity-tokens", "4096", "--max-model-len", "2048",
            "--rate-429", "0.1", "--rate-500", "0.05", "--rate-timeout", "0.01",
            "--timeout-s", "2", "--retry-after-s", "3", "--seed", "9", "--tokens-per-minute", "1000",
            "--piece-chars", "1", "--served-models", "gpt-4o, gpt-4.1",
            "--embedding-models", "text-embedding-3-small", "--embedding-dims", "256",
        ]
    )  # fmt: skip
    assert settings.model_dump() == {
        "name": "external-api",
        "host": "0.0.0.0",
        "port": 8102,
        "model": "gpt-4o-mini",
        "mode": Mode.CANNED,
        "canned_text": "ok",
        "ttft_ms": 150.0,
        "itl_ms": 12.5,
        "max_num_seqs": 8,
        "kv_capacity_tokens": 4096,
        "max_model_len": 2048,
        "rate_429": 0.1,
        "rate_500": 0.05,
        "rate_timeout": 0.01,
        "timeout_s": 2.0,
        "retry_after_s": 3,
        "seed": 9,
        "tokens_per_minute": 1000,
        "piece_chars": 1,
        "served_models": ["gpt-4o", "gpt-4.1"],
        "embedding_models": ["text-embedding-3-small"],
        "embedding_dims": 256,
    }
    assert settings.chat_models == ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]


def test_flags_override_env_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_SIMULATOR_TTFT_MS", "40")
    monkeypatch.setenv("STELLWERK_SIMULATOR_ITL_MS", "4")
    settings = parse_settings(["--itl-ms", "1"])
    assert (settings.ttft_ms, settings.itl_ms, settings.mode) == (40.0, 1.0, Mode.ECHO)


def test_model_lists_come_from_env_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_SIMULATOR_SERVED_MODELS", "a,b")
    monkeypatch.setenv("STELLWERK_SIMULATOR_EMBEDDING_MODELS", "e1")
    settings = parse_settings([])
    assert (settings.served_models, settings.embedding_models) == (["a", "b"], ["e1"])
    with pytest.raises(pydantic.ValidationError):
        parse_settings(["--embedding-models", "a"])  # a chat model cannot also embed


def test_fault_rates_above_one_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_settings(["--rate-429", "0.6", "--rate-500", "0.6"])
