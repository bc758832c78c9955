"""Tool gateway process settings (``STELLWERK_TOOLGATEWAY_*``). What the gateway enforces
lives in the platform config (``tool_servers``, ``tool_rate_limits``, ``tool_approvals``)
and in the tool policy; these are per process."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_POLICY_DIR: Final = Path(__file__).parent / "policies"


class ToolGatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STELLWERK_TOOLGATEWAY_", extra="ignore")

    policy_dir: Path = SHIPPED_POLICY_DIR
    policy_check_interval_s: float = 1.0
    metrics_port: int = 0  # Prometheus /metrics; 0 = off
    max_in_flight: int = 64  # tool calls handled concurrently per worker
    # How long start-up waits for the MCP servers' first tool listing before serving anyway
    # (a server that is not up yet is retried in the background).
    discovery_wait_s: float = 15.0
    refresh_interval_s: float = 60.0  # re-list every server's tools (besides change events)
    # Refuse argument keys the tool's schema does not declare, even where the schema would
    # allow them: an undeclared key cannot be audited by name and may carry data.
    strict_arguments: bool = True
    # Longest wait for the DLP service's screening of a call's arguments or result (capped by
    # the call's deadline); no answer refuses the call with ``dlp_unavailable``.
    dlp_timeout_s: float = 5.0
