"""The tool gateway's settings: per process (``STELLWERK_TOOLGATEWAY_*``,
``ToolGatewaySettings``) and its sections of the platform config file (``tool_servers``,
``tool_rate_limits``, ``tool_approvals``: ``ToolConfig``). The other services never read
these sections; the shared config model (``services.runtime.settings.PlatformConfig``)
ignores them, and this module validates them where they are used — at the tool gateway's
start and at ``stellwerk up`` (which launches the HTTP tool servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.kernel.limit_spec import LimitSpec
from services.runtime.settings import config_sections

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


class ToolServer(BaseModel):
    """An MCP server of the tool zone, reached over streamable HTTP (``url``) or stdio
    (``command``, started by each gateway worker as its child). ``launch``: for an HTTP
    server, the ``python`` arguments ``stellwerk up`` starts it with; ``health_url`` is
    polled until it answers."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    transport: Literal["http", "stdio"] = "stdio"
    url: str | None = None
    command: list[str] = Field(default_factory=list)  # "{python}" is this interpreter
    env: dict[str, str] = Field(default_factory=dict)
    launch: list[str] | None = None
    health_url: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)  # per call, capped by the call's deadline


class ToolRateLimits(BaseModel):
    """Tool-call limits shared by every gateway worker through KV ``ratelimits``: per agent,
    per application, per user (the human an agent acts for) and per tool (``server.tool``,
    over all callers, protecting the backend). ``"*"`` applies to every one without an entry;
    only ``requests`` and ``per_s`` of a ``LimitSpec`` count here."""

    agents: dict[str, LimitSpec] = Field(default_factory=dict)
    applications: dict[str, LimitSpec] = Field(default_factory=dict)
    users: dict[str, LimitSpec] = Field(default_factory=dict)
    tools: dict[str, LimitSpec] = Field(default_factory=dict)


class ToolApprovals(BaseModel):
    """Human approval of critical tool calls. The tool policy sets each tool's timeout; these
    bound it. An approved call that has not finished ``execution_lease_s`` after approval is
    failed (never run twice: critical tools write)."""

    default_timeout_s: float = Field(default=900.0, gt=0)
    max_timeout_s: float = Field(default=86_400.0, gt=0)
    execution_lease_s: float = Field(default=120.0, gt=0)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    keep_decided_s: float = Field(default=7 * 86_400.0, gt=0)  # then the KV record goes (APPROVALS keeps the events)
    # Issue 14 (docs/identity.md): a decision must carry a credential (an API key or OIDC
    # token) whose role is ``approver_role``, of the call's tenant, not the requester's. On by
    # default; off only for local experiments (a typed name is then taken at its word).
    require_approver_identity: bool = True
    approver_role: str = "approver"


class ToolConfig(BaseModel):
    """The tool gateway's sections of the platform config file."""

    tool_servers: list[ToolServer] = Field(default_factory=list)
    tool_rate_limits: ToolRateLimits = Field(default_factory=ToolRateLimits)
    tool_approvals: ToolApprovals = Field(default_factory=ToolApprovals)

    @classmethod
    def load(cls, path: Path) -> ToolConfig:
        return cls.model_validate(config_sections(path, cls.model_fields))
