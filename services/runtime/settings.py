"""Process settings from the environment (``STELLWERK_*``) and the platform config file."""

from __future__ import annotations

import hashlib
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.vocabulary import BudgetClass, DataSensitivity, QualityTier, Route, UsecaseClass

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "stellwerk.yaml"


class MeshSettings(BaseSettings):
    """What every worker process needs to join the mesh."""

    model_config = SettingsConfigDict(env_prefix="STELLWERK_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    config_file: Path = DEFAULT_CONFIG
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    batch_size: int = 8
    log_level: str = "warning"
    metrics_port: int = 0  # Prometheus exposition of this worker; 0 = off
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


class ApiKey(BaseModel):
    """An API key as stored: only its SHA-256, never the key itself."""

    key_id: str
    key_sha256: str
    tenant: str
    business_unit: str
    user_role: str
    usecase_class: UsecaseClass = "chat"
    budget_class: BudgetClass = "standard"
    max_budget_class: BudgetClass = "standard"
    quality_tier: QualityTier = "standard"
    max_quality_tier: QualityTier = "high"
    sensitivity_floor: DataSensitivity = "internal"


class Deployment(BaseModel):
    """One model deployment behind a route. Prices are in ``currency``."""

    name: str
    route: Route
    model: str
    api_base: str
    api_key: str = "sk-unused"
    provider: Literal["openai", "hosted_vllm", "azure"] = "openai"
    model_version: str
    config_version: str = "v1"
    prompt_template_version: str = "chat-v1"
    input_price_per_1k: float = 0.0
    output_price_per_1k: float = 0.0
    gpu_hour_rate: float = 0.0
    gpu_share: float = 0.0
    timeout_s: float = 60.0
    # Streaming the call measures time to first token but costs ~6 ms in LiteLLM's stream
    # wrapper; the answer is screened as a whole before the caller sees it either way.
    stream: bool = False
    max_parallel_requests: int | None = None
    # External APIs: the provider's tokens-per-minute quota (None = unlimited).
    tokens_per_minute: int | None = None
    # The quota's accounting window; providers count per minute, tests may stretch it.
    quota_window_s: float = 60.0
    # Local deployments: capacity limits checked against the vLLM /metrics.
    max_requests_waiting: float = 4
    max_kv_cache_usage: float = 0.9
    # Circuit breaker: consecutive failed calls that take the route down, and for how long.
    breaker_failures: int = 3
    breaker_cooldown_s: float = 15.0


class SimulatorSpec(BaseModel):
    """A vLLM simulator ``stellwerk up`` starts in place of a model server."""

    name: str
    port: int
    model: str
    mode: Literal["echo", "canned"] = "echo"
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    max_num_seqs: int = 64
    max_model_len: int = 32768


class PlatformConfig(BaseModel):
    currency: str = "EUR"
    request_timeout_s: float = 60.0
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # Load shedding: above this many requests waiting for DLP input screening the gateway
    # answers 503 with Retry-After instead of queueing more work into the pipeline.
    max_pipeline_backlog: int = 1000
    max_in_flight_per_gateway: int = 512
    api_keys: list[ApiKey]
    deployments: list[Deployment]
    simulators: list[SimulatorSpec] = []

    def key_for(self, presented: str) -> ApiKey | None:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        for key in self.api_keys:
            if key.key_sha256 == digest:
                return key
        return None

    def deployments_for(self, route: Route) -> list[Deployment]:
        return [d for d in self.deployments if d.route == route]


def load_config(path: Path) -> PlatformConfig:
    return PlatformConfig.model_validate(yaml.safe_load(path.read_text()))


@lru_cache(maxsize=4)
def cached_config(path: Path) -> PlatformConfig:
    return load_config(path)
