"""Injected faults and the latency knobs, both changeable at run time via ``/admin/faults``."""

from __future__ import annotations

import random
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.simulator.settings import SimulatorSettings


class Fault(StrEnum):
    RATE_LIMITED = "429"
    SERVER_ERROR = "500"
    TIMEOUT = "timeout"


class FaultConfig(BaseModel):
    """Immutable snapshot: a request reads one snapshot, so an update never tears mid-request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_429: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_500: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_timeout: float = Field(default=0.0, ge=0.0, le=1.0)
    ttft_ms: float = Field(default=0.0, ge=0.0)
    itl_ms: float = Field(default=0.0, ge=0.0)
    timeout_s: float = Field(default=30.0, ge=0.0)
    retry_after_s: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _rates_are_a_distribution(self) -> FaultConfig:
        if self.rate_429 + self.rate_500 + self.rate_timeout > 1.0:
            raise ValueError("rate_429 + rate_500 + rate_timeout must not exceed 1")
        return self

    @classmethod
    def from_settings(cls, settings: SimulatorSettings) -> FaultConfig:
        return cls.model_validate(settings.model_dump(include=set(cls.model_fields)))


class FaultUpdate(BaseModel):
    """Body of ``POST /admin/faults``: every field optional; ``seed`` re-seeds the RNG."""

    model_config = ConfigDict(extra="forbid")

    rate_429: float | None = None
    rate_500: float | None = None
    rate_timeout: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    timeout_s: float | None = None
    retry_after_s: int | None = None
    seed: int | None = None


class FaultInjector:
    def __init__(self, config: FaultConfig, seed: int | None) -> None:
        self.config = config
        self._rng = random.Random(seed)

    def apply(self, update: FaultUpdate) -> FaultConfig:
        changes = update.model_dump(exclude_unset=True, exclude={"seed"})
        # Validate the merged result as a whole so a partial update cannot break the rate sum.
        self.config = FaultConfig.model_validate({**self.config.model_dump(), **changes})
        if update.seed is not None:
            self._rng.seed(update.seed)
        return self.config

    def draw(self, config: FaultConfig) -> Fault | None:
        """One uniform draw partitioned into [429 | 500 | timeout | none]."""
        threshold_429 = config.rate_429
        threshold_500 = threshold_429 + config.rate_500
        threshold_timeout = threshold_500 + config.rate_timeout
        if threshold_timeout == 0.0:
            # Fault-free runs (benchmarks) skip the RNG entirely.
            return None
        roll = self._rng.random()
        if roll < threshold_429:
            return Fault.RATE_LIMITED
        if roll < threshold_500:
            return Fault.SERVER_ERROR
        if roll < threshold_timeout:
            return Fault.TIMEOUT
        return None
