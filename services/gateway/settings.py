"""The gateway's sections of the platform config file: its input limits (``gateway_limits``)
and its rate limits (``rate_limits``), ``GatewayConfig``. No other service reads them, so the
shared config model (``services.runtime.settings.PlatformConfig``) ignores them and this module
validates them where they are used — at the gateway's start and at ``stellwerk up``. The
limit of one key, team or endpoint (``LimitSpec``) is the kernel's: the tool gateway's limits
are written the same way.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from services.kernel.limit_spec import LimitSpec
from services.runtime.settings import config_sections


class RateLimits(BaseModel):
    """Gateway limits, shared by every replica through KV ``ratelimits``. Keys name an API key
    (``users``), a business unit (``teams``) or the model endpoint a request addresses
    (``endpoints``: ``stellwerk`` or a route); ``"*"`` applies to every one without an entry."""

    users: dict[str, LimitSpec] = Field(default_factory=dict)
    teams: dict[str, LimitSpec] = Field(default_factory=dict)
    endpoints: dict[str, LimitSpec] = Field(default_factory=dict)
    # Per end user (issue 14): keyed on the hashed end user (``user`` or X-Stellwerk-End-User);
    # entries name an API key id, a tenant or ``"*"``. Requests without an end user do not count.
    end_users: dict[str, LimitSpec] = Field(default_factory=dict)
    completion_tokens_estimate: int = Field(default=512, ge=0)  # charged when max_tokens is absent


class GatewayLimits(BaseModel):
    """What one HTTP request to the gateway may be (issue 18); each is enforced with a
    documented status (docs/openai.md, "Limits and errors"). Concurrency is counted per
    gateway replica."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)  # 413 above
    max_header_bytes: int = Field(default=16 * 1024, gt=0)  # request line + headers; 431 above
    max_json_depth: int = Field(default=32, ge=4)  # nesting of arrays and objects; 400 above
    max_messages: int = Field(default=1024, gt=0)  # per request; 400 above
    max_message_chars: int = Field(default=1_000_000, gt=0)  # per message; 413 above
    max_metadata_keys: int = Field(default=16, ge=0)  # OpenAI's own bounds for ``metadata``
    max_metadata_key_chars: int = Field(default=64, gt=0)
    max_metadata_value_chars: int = Field(default=512, gt=0)
    # The largest context window of any route: a request whose ``max_tokens`` (plus its
    # estimated prompt) exceeds it can be served by no route, so it is a 400, not a 429.
    context_window_tokens: int = Field(default=200_000, gt=0)
    header_timeout_s: float = Field(default=10.0, gt=0)  # headers of a request must arrive within
    body_read_timeout_s: float = Field(default=30.0, gt=0)  # max wait for each body chunk; 408
    send_timeout_s: float = Field(default=30.0, gt=0)  # a client that reads nothing this long is cut off
    max_concurrent_per_key: int = Field(default=256, gt=0)  # requests in flight per API key; 429 (a key may serve a whole UI)


class GatewayConfig(BaseModel):
    """The gateway's sections of the platform config file."""

    gateway_limits: GatewayLimits = Field(default_factory=GatewayLimits)
    rate_limits: RateLimits = Field(default_factory=RateLimits)

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        return cls.model_validate(config_sections(path, cls.model_fields))
