"""Configuration of one simulator instance (flags override ``STELLWERK_SIMULATOR_*`` env vars)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Mode(StrEnum):
    ECHO = "echo"
    CANNED = "canned"


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STELLWERK_SIMULATOR_", extra="forbid")

    name: str = "vllm-sim"
    host: str = "127.0.0.1"
    port: int = Field(default=8101, ge=0, le=65535)
    model: str = "stellwerk-local-llama"
    mode: Mode = Mode.ECHO
    canned_text: str = "This is a simulated answer from the Stellwerk model simulator."
    ttft_ms: float = Field(default=0.0, ge=0.0)
    itl_ms: float = Field(default=0.0, ge=0.0)
    max_num_seqs: int = Field(default=256, ge=1)
    kv_capacity_tokens: int = Field(default=131_072, ge=1)
    # Like vLLM: prompt + completion must fit, otherwise HTTP 400.
    max_model_len: int = Field(default=32_768, ge=1)
    rate_429: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_500: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_timeout: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_s: float = Field(default=30.0, ge=0.0)
    retry_after_s: int = Field(default=1, ge=0)
    seed: int | None = None
    # Report a provider quota in OpenAI's x-ratelimit-*-tokens headers (None: send none).
    tokens_per_minute: int | None = Field(default=None, ge=1)
    # Streamed pieces of this many characters (0: one per token, as vLLM): tests cut an
    # answer into one-character events, as the pii-leak-benchmark asks its upstream to.
    piece_chars: int = Field(default=0, ge=0)
    # Further chat model ids served besides ``model``, and embedding model ids (comma-separated
    # in flags and env vars; NoDecode keeps pydantic-settings from expecting JSON in the env).
    served_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    embedding_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    embedding_dims: int = Field(default=384, ge=1, le=65_536)

    @field_validator("served_models", "embedding_models", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _rates_are_a_distribution(self) -> SimulatorSettings:
        # One uniform draw picks at most one fault, so the rates must not overlap.
        if self.rate_429 + self.rate_500 + self.rate_timeout > 1.0:
            raise ValueError("rate_429 + rate_500 + rate_timeout must not exceed 1")
        both = set(self.chat_models) & set(self.embedding_models)
        if both:
            raise ValueError(f"model ids both chat and embedding models: {sorted(both)}")
        return self

    @property
    def chat_models(self) -> list[str]:
        """``model`` first, then ``served_models``, each id once."""
        return list(dict.fromkeys([self.model, *self.served_models]))
