"""A rate limit as configured: requests and tokens per window.

In the kernel because two services read it: the gateway (``rate_limits`` of the platform
config, ``services/gateway/settings.py``) and the tool gateway (``tool_rate_limits``,
``services/toolgateway/settings.py``); each turns it into ``gcra.Rate`` values.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class LimitSpec(BaseModel):
    """At most ``requests`` requests and ``tokens`` tokens per ``per_s`` seconds (GCRA: the
    allowance refills continuously; a full window's worth may arrive at once)."""

    requests: float | None = Field(default=None, gt=0)
    tokens: float | None = Field(default=None, gt=0)
    per_s: float = Field(default=60.0, gt=0)
