"""Process settings from the environment (``STELLWERK_*``) and the platform config file."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.vocabulary import (
    FALLBACK_ROUTE,
    BudgetClass,
    Capability,
    DataSensitivity,
    Locality,
    QualityTier,
    Route,
    UsecaseClass,
)
from services.runtime.rollouts import PolicyCanary, Rollback, Shadow, Variant, check_rollouts

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "stellwerk.yaml"


class MeshSettings(BaseSettings):
    """What every worker process needs to join the mesh."""

    model_config = SettingsConfigDict(env_prefix="STELLWERK_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    config_file: Path = DEFAULT_CONFIG
    # Short on purpose (issue 19): handlers that run longer send in-progress acks, so only a
    # crashed worker's messages wait this long before they are redelivered.
    ack_wait_s: float = 4.0
    max_deliver: int = 5
    batch_size: int = 8
    log_level: str = "warning"
    metrics_port: int = 0  # Prometheus exposition of this worker; 0 = off
    # Retention of the AUDIT stream in days (default: schemas.streams.AUDIT, 10 years).
    # Every process that ensures the topology must run with the same value.
    audit_retention_days: float | None = None
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # --- NATS cluster, credentials and TLS (issue 8; users from stellwerk/nats_auth.py) -------
    # ``nats_url`` may list several servers separated by commas (a cluster's seed list).
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_password_file: Path | None = None  # wins over nats_password (mounted secrets)
    nats_tls_ca: Path | None = None  # CA that signed the servers' certificates; enables TLS
    nats_tls_cert: Path | None = None  # client certificate and key, where servers verify clients
    nats_tls_key: Path | None = None
    # Replicas of every stream and KV bucket the runtime creates (None: each definition's own).
    stream_replicas: int | None = None

    def nats_servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def nats_password_value(self) -> str | None:
        if self.nats_password_file is not None:
            return self.nats_password_file.read_text().strip()
        return self.nats_password.get_secret_value() if self.nats_password else None

    def nats_inbox_prefix(self) -> str:
        """Replies and deliveries to this user arrive under its own prefix, which its NATS
        permissions allow and no other user's do."""
        return f"_INBOX_{self.nats_user}" if self.nats_user else "_INBOX"

    def nats_tls_context(self) -> ssl.SSLContext | None:
        if self.nats_tls_ca is None:
            return None
        context = ssl.create_default_context(cafile=str(self.nats_tls_ca))
        if self.nats_tls_cert is not None:
            context.load_cert_chain(str(self.nats_tls_cert), str(self.nats_tls_key) if self.nats_tls_key else None)
        return context

    def nats_connect_options(self) -> dict[str, Any]:
        """Credentials and TLS as keyword arguments of ``nats.connect`` (empty when unset)."""
        options: dict[str, Any] = {}
        if self.nats_user:
            options["user"] = self.nats_user
            options["password"] = self.nats_password_value()
            options["inbox_prefix"] = self.nats_inbox_prefix()
        tls = self.nats_tls_context()
        if tls is not None:
            options["tls"] = tls
        return options
    # --- end issue 8 ---------------------------------------------------------------------------


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
    # Personal data found in prompts: pseudonymised (placeholders the caller's answer gets
    # restored) instead of redacted, unless a request says otherwise (header or metadata).
    pseudonymize: bool = False
    # Issue 14 (docs/identity.md): the application may name its end user in the header
    # ``X-Stellwerk-End-User`` (hashed per tenant at once); refused (403) for other keys.
    forward_end_user: bool = False
    # Issue 14: the first key id of a rotation chain. Rate limits and the concurrency guard
    # count per lineage, so rotating a key does not reset what its caller has used.
    lineage: str | None = None

    @property
    def limit_id(self) -> str:
        """Whom limits count against: the key's lineage (the id it was first created under)."""
        return self.lineage or self.key_id


class RouteSpec(BaseModel):
    """A route as data (issue 13): what the routing policy decides on. Deployments name it."""

    model_config = ConfigDict(populate_by_name=True)

    name: Route = Field(pattern=r"^[a-z0-9][a-z0-9._\-]{0,63}$")
    # A free identifier, e.g. small | standard | high | long-context | embeddings; the
    # policy data orders classes, and a client may name one in ``model``.
    route_class: str = Field(alias="class", pattern=r"^[a-z0-9][a-z0-9._\-]{0,63}$")
    locality: Locality
    capabilities: list[Capability]
    context_tokens: int = Field(gt=0)
    cost_rank: int = Field(ge=0, lt=1000)  # lower = cheaper; downgrade moves to a cheaper route
    description: str = ""
    # Issue 17 (services/runtime/rollouts.py, docs/routing.md): canary split by weight between
    # deployments or prompt templates, a shadow mirror, the canary's rollback thresholds.
    variants: list[Variant] = Field(default_factory=list)
    shadow: Shadow | None = None
    rollback: Rollback = Field(default_factory=Rollback)


# Routes derived for a config without a ``routes:`` section (configs from before issue 13).
_DEFAULT_CAPABILITIES: list[Capability] = ["chat", "tools", "json_schema"]


class Reservation(BaseModel):
    """Reserved capacity (PTU, issue 17; docs/finops.md "Reserved capacity"): a fixed monthly
    price for a guaranteed throughput — the deployment's ``tokens_per_minute``. FinOps books
    the price pro rata per accounting interval; the router prefers the deployment's route
    while the throughput lasts, then spills over to pay-as-you-go."""

    monthly_price: float = Field(gt=0)
    # What the same tokens would cost pay-as-you-go (the break-even comparison), per 1k.
    payg_input_price_per_1k: float = Field(ge=0)
    payg_output_price_per_1k: float = Field(ge=0)


class Deployment(BaseModel):
    """One model deployment behind a route. Prices are in ``currency``."""

    name: str
    route: Route
    model: str
    api_base: str
    # A secret by reference (issue 14, docs/identity.md): ``os.environ/NAME`` or ``file:/path``,
    # resolved when the config is loaded; plaintext is refused unless ``allow_plaintext_secrets``
    # (local development). Never in a repr, so never in a log line that prints the config.
    api_key: str = Field(default="sk-unused", repr=False)
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
    # Reserved capacity (PTU): fixed monthly price for ``tokens_per_minute`` (required then).
    reserved: Reservation | None = None
    # Local deployments: capacity limits checked against the vLLM /metrics.
    max_requests_waiting: float = 4
    max_kv_cache_usage: float = 0.9
    # Circuit breaker: consecutive failed calls that take the route down, and for how long.
    breaker_failures: int = 3
    breaker_cooldown_s: float = 15.0

    @field_validator("api_key", mode="before")
    @classmethod
    def _secret_by_reference(cls, value: Any) -> Any:
        return resolve_secret(value) if isinstance(value, str) else value


SECRET_REFERENCES: Final = ("os.environ/", "file:")


def resolve_secret(value: str) -> str:
    """``os.environ/NAME`` → the variable's value, ``file:/path`` → the file's content (stripped),
    anything else as it is. Errors name the variable or the path, never a value."""
    if value.startswith("os.environ/"):
        name = value.removeprefix("os.environ/")
        found = os.environ.get(name)
        if not found:
            raise ValueError(f"secret reference {value!r}: the environment variable {name} is not set or empty")
        return found
    if value.startswith("file:"):
        path = Path(value.removeprefix("file:")).expanduser()
        try:
            content = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"secret reference {value!r}: cannot read {path} ({type(exc).__name__})") from None
        if not content:
            raise ValueError(f"secret reference {value!r}: {path} is empty")
        return content
    return value


# Local simulators and model servers without authentication: not a secret.
NOT_A_SECRET: Final = "sk-unused"
ALLOW_PLAINTEXT_ENV: Final = "STELLWERK_ALLOW_PLAINTEXT_SECRETS"


def plaintext_secrets(raw: Any) -> list[str]:
    """Where a raw (YAML) config writes a secret out in plaintext: ``deployment NAME`` for a
    provider ``api_key``, ``end_user_hash_key``, ``console_oidc.client_secret``."""
    if not isinstance(raw, dict):
        return []
    found = [
        f"deployment {d.get('name', '?')}" for d in raw.get("deployments") or []
        if isinstance(d, dict) and isinstance(d.get("api_key"), str)
        and not d["api_key"].startswith(SECRET_REFERENCES) and d["api_key"] != NOT_A_SECRET
    ]
    key = raw.get("end_user_hash_key")
    if isinstance(key, str) and not key.startswith(SECRET_REFERENCES):
        found.append("end_user_hash_key")
    console = raw.get("console_oidc")
    secret = console.get("client_secret") if isinstance(console, dict) else None
    if isinstance(secret, str) and not secret.startswith(SECRET_REFERENCES):
        found.append("console_oidc.client_secret")
    return found


def plaintext_allowed(raw: Any) -> bool:
    """Plaintext secrets are for local development only: the config says so explicitly
    (``allow_plaintext_secrets: true``), or the environment does (``STELLWERK_ALLOW_PLAINTEXT_SECRETS=1``)."""
    if isinstance(raw, dict) and raw.get("allow_plaintext_secrets") is True:
        return True
    return os.environ.get(ALLOW_PLAINTEXT_ENV, "").strip().lower() in ("1", "true", "yes")


def plaintext_refusal(where: list[str]) -> str:
    """The error a config with plaintext secrets is refused with: names places, never values."""
    return (f"plaintext secrets in the config ({', '.join(where)}): write them as os.environ/NAME or "
            "file:/path (docs/identity.md#secrets-by-reference); for local development only, set "
            f"allow_plaintext_secrets: true or {ALLOW_PLAINTEXT_ENV}=1")


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
    piece_chars: int = 0  # streamed pieces of N characters (0: one per token)
    # Further model ids the simulator answers to (chat), and embedding models it serves.
    served_models: list[str] = []
    embedding_models: list[str] = []
    embedding_dims: int = 384


class PlatformConfig(BaseModel):
    currency: str = "EUR"
    request_timeout_s: float = 60.0
    # A streamed answer whose screening worker sends neither text nor heartbeat for this long
    # is ended with a typed error (the worker died); heartbeats come every second.
    stream_idle_timeout_s: float = 5.0
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # The gateway's OpenAPI schema at /openapi.json, for callers with a valid key (issue 14);
    # off by default. Swagger UI and ReDoc are never served.
    gateway_openapi: bool = False
    # The operators' web console (issue 15; stellwerk/console), on the gateway's host.
    console_port: int = 8090
    # Load shedding: above this many requests waiting for DLP input screening the gateway
    # answers 503 with Retry-After instead of queueing more work into the pipeline.
    max_pipeline_backlog: int = 1000
    max_in_flight_per_gateway: int = 512
    api_keys: list[ApiKey]
    # Routes as data (issue 13); derived from the deployments when the section is absent.
    routes: list[RouteSpec] = Field(default_factory=list)
    # Model names clients already send (``gpt-4o`` in an app's config), mapped to what they
    # mean here: "stellwerk" (the policy chooses), a route or a route class (issue 13).
    model_aliases: dict[str, str] = Field(default_factory=dict)
    deployments: list[Deployment]
    simulators: list[SimulatorSpec] = []
    finops_timezone: str = "UTC"  # where budget days and months begin (FinOps and the console)
    # Sections one service reads are in this file too, but that service owns their models and
    # reads them itself (settings live with their service; docs/architecture.md): the tool
    # gateway's ``tool_servers``, ``tool_rate_limits``, ``tool_approvals``
    # (services/toolgateway/settings.py, ``ToolConfig``); FinOps' ``gpu_classes``,
    # ``price_table``, ``budgets`` (services/finops/settings.py, ``FinOpsConfig``); the
    # gateway's ``gateway_limits`` and ``rate_limits`` (services/gateway/settings.py,
    # ``GatewayConfig``). This model ignores them, as it ignores any key it does not know.
    # Bearer tokens of an OpenID Connect issuer at the gateway (issue 14; model at the end of
    # this file, docs/identity.md). None: API keys only.
    oidc: OidcConfig | None = None
    # Sign-in to the console with that issuer (issue 15, docs/console.md); needs ``oidc``.
    # Shared, not the console's own: the tool gateway accepts tokens issued to its
    # ``client_id`` from people deciding approvals (services/toolgateway/approvers.py).
    console_oidc: ConsoleOidcConfig | None = None
    # System prompts the platform injects (issue 17, docs/routing.md): versioned template files
    # ``<dir>/<usecase>/<name>.md`` (None: the shipped ones), and the template per use case.
    prompts_dir: Path | None = None
    prompt_templates: dict[UsecaseClass, str] = Field(default_factory=dict)
    # A stored routing-policy version deciding a share of the requests (issue 17).
    policy_canary: PolicyCanary | None = None
    # Shadow (mirrored) calls each inference worker runs at once; more are dropped (counted in
    # stellwerk_shadow_dropped_total): mirrors run beside the callers' calls, not instead of them.
    shadow_max_in_flight: int = Field(default=16, ge=0)
    # Issue 14 (docs/identity.md): the key of the end users' pseudonyms (HMAC per tenant), a
    # secret by reference, resolved where it is used (``end_user_key()``: the gateway at start,
    # the auditors' and FinOps CLI) so no other service needs the secret mounted. None: an
    # unkeyed hash (development; ``stellwerk up`` warns).
    end_user_hash_key: str | None = Field(default=None, repr=False)
    # Plaintext secrets (a provider ``api_key`` written out) are refused at load; local
    # development may allow them here or with STELLWERK_ALLOW_PLAINTEXT_SECRETS=1.
    allow_plaintext_secrets: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_plaintext_secrets(cls, data: Any) -> Any:
        where = plaintext_secrets(data)
        if where and not plaintext_allowed(data):
            raise ValueError(plaintext_refusal(where))
        return data

    def end_user_key(self) -> str | None:
        """The end-user pseudonym key, resolved now; ValueError naming the reference if it does
        not resolve (the caller fails closed)."""
        return resolve_secret(self.end_user_hash_key) if self.end_user_hash_key else None

    def key_for(self, presented: str) -> ApiKey | None:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        for key in self.api_keys:
            if key.key_sha256 == digest:
                return key
        return None

    def deployments_for(self, route: Route) -> list[Deployment]:
        return [d for d in self.deployments if d.route == route]

    def reserved_route(self, route: Route) -> bool:
        """A route of reserved capacity: every deployment behind it is reserved (PTU)."""
        deployments = self.deployments_for(route)
        return bool(deployments) and all(d.reserved for d in deployments)

    @model_validator(mode="after")
    def _routes_match_deployments(self) -> PlatformConfig:
        unmetered = [d.name for d in self.deployments if d.reserved and not d.tokens_per_minute]
        if unmetered:
            raise ValueError(f"reserved deployments {unmetered} need tokens_per_minute (their reserved throughput)")
        if not self.routes:
            derived: dict[str, RouteSpec] = {}
            for d in self.deployments:
                if d.route not in derived:
                    local = d.provider == "hosted_vllm"
                    derived[d.route] = RouteSpec.model_validate({
                        "name": d.route,
                        "class": "standard" if local else "high",
                        "locality": "local" if local else "external",
                        "capabilities": list(_DEFAULT_CAPABILITIES),
                        "context_tokens": 32768 if local else 200_000,
                        "cost_rank": 1 if local else 3,
                    })
            self.routes = list(derived.values())
            return self
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"routes: duplicate route names in {names}")
        if FALLBACK_ROUTE in names:
            raise ValueError(f"routes: {FALLBACK_ROUTE!r} is the policy's refusal, not a route")
        undeclared = sorted({d.route for d in self.deployments} - set(names))
        if undeclared:
            raise ValueError(f"deployments name undeclared routes {undeclared}; declare them under routes:")
        empty = [n for n in names if not self.deployments_for(n)]
        if empty:
            raise ValueError(f"routes {empty} have no deployment; add one under deployments: (or remove the route)")
        check_rollouts(self)
        return self

    def route(self, name: str) -> RouteSpec | None:
        return next((r for r in self.routes if r.name == name), None)

    def resolve_model(self, name: str) -> str | None:
        """The route name or route class a client's ``model`` names (an alias, a route name,
        a route class, or a deployment's model id), None if it names none of them or an
        alias of "stellwerk" (``knows_model`` tells the two apart)."""
        if name in self.model_aliases:
            alias = self.model_aliases[name]
            return None if alias == "stellwerk" else self.resolve_model(alias)
        for route in self.routes:
            if name == route.name:
                return route.name
        for route in self.routes:
            if name == route.route_class:
                return route.route_class
        for deployment in self.deployments:
            if name == deployment.model:
                return deployment.route
        return None


    def knows_model(self, name: str) -> bool:
        """``name`` means something here: "stellwerk", an alias, a route, a class, a model id."""
        return name == "stellwerk" or name in self.model_aliases or self.resolve_model(name) is not None


def load_config(path: Path) -> PlatformConfig:
    return PlatformConfig.model_validate(yaml.safe_load(path.read_text()))


def config_sections(path: Path, names: Iterable[str]) -> dict[str, Any]:
    """The named top-level sections of the platform config file, as written: what a service
    that models its own sections (``ToolConfig``, ``FinOpsConfig``, ``GatewayConfig``)
    validates. Sections the file leaves out are absent (the model's defaults apply)."""
    raw = yaml.safe_load(path.read_text()) or {}
    return {name: raw[name] for name in names if name in raw}


@lru_cache(maxsize=4)
def cached_config(path: Path) -> PlatformConfig:
    return load_config(path)


# --- OIDC at the gateway (issue 14, docs/identity.md) -----------------------------------------


class OidcClaims(BaseModel):
    """Which claim of a token carries what. A list-valued claim (Entra ``roles``, Keycloak
    ``groups``) gives its first value that ``OidcConfig.roles`` maps, else its first value."""

    subject: str = "sub"
    tenant: str = "tenant"
    business_unit: str = "business_unit"
    role: str = "roles"
    usecase: str | None = "usecase"


class OidcConfig(BaseModel):
    """Tokens of one issuer, verified against its published keys (discovery + JWKS, cached;
    an unknown ``kid`` fetches the keys again, so a rotation at the provider is honoured)."""

    issuer: str  # exactly the token's ``iss`` (and the discovery document's ``issuer``)
    audience: list[str]  # the token's ``aud`` must name one of these
    discovery_url: str | None = None  # default: <issuer>/.well-known/openid-configuration
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    jwks_cache_s: float = Field(default=300.0, gt=0)
    jwks_min_refresh_s: float = Field(default=1.0, ge=0)  # at most one refetch per interval on unknown kids
    leeway_s: float = Field(default=30.0, ge=0)  # clock skew allowed on exp / nbf / iat
    claims: OidcClaims = Field(default_factory=OidcClaims)
    # Used where a token lacks the claim (e.g. one tenant per issuer).
    defaults: dict[Literal["tenant", "business_unit", "role", "usecase"], str] = Field(default_factory=dict)
    # IdP role or group value → Stellwerk role, e.g. {"Stellwerk.Approver": "approver"}.
    roles: dict[str, str] = Field(default_factory=dict)
    # What an OIDC identity may ask for: ApiKey fields (sensitivity_floor, max_quality_tier, ...).
    grants: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_audience(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("audience"), str):
            return {**data, "audience": [data["audience"]]}
        return data

    def discovery(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class ConsoleOidcConfig(BaseModel):
    """The console as an OIDC client (authorization code + PKCE); issuer and claim mapping
    come from ``oidc``. ``redirect_base_url``: the console's public origin, e.g.
    ``https://console.example.org`` (default: the URL the request came in on)."""

    client_id: str
    # None: a public client (PKCE only). A secret by reference (``os.environ/NAME``,
    # ``file:/path``), resolved by the console when it signs someone in (issue 14).
    client_secret: str | None = Field(default=None, repr=False)

    def secret(self) -> str | None:
        return resolve_secret(self.client_secret) if self.client_secret else None
    redirect_base_url: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])


# Once, after every model PlatformConfig names (OIDC, further down) is defined.
PlatformConfig.model_rebuild()
