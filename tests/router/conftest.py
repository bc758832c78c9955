"""Fixtures for the router's functional core: a private copy of the shipped policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.events import RuntimeSignals
from schemas.vocabulary import ProviderHealth
from services.router.decision import RouteEntry, RouterSettings, RoutingEngine, RoutingInput
from services.router.policy_store import SHIPPED_POLICY_DIR


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """The shipped policy copied to tmp_path, free to edit."""
    target = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, target)
    return target


@pytest.fixture
def engine(policy_dir: Path) -> RoutingEngine:
    # A very long interval: tests trigger reloads explicitly, never by waiting.
    return RoutingEngine(RouterSettings(policy_dir=policy_dir, reload_interval_s=3600))


def signals(
    *,
    local_capacity_ok: bool = True,
    api_quota_remaining: float = 100_000,
    local: ProviderHealth = "healthy",
    api: ProviderHealth = "healthy",
    budget_exhausted: bool = False,
) -> RuntimeSignals:
    return RuntimeSignals(
        local_capacity_ok=local_capacity_ok,
        api_quota_remaining=api_quota_remaining,
        provider_health={"local-vllm": local, "api-gpt52": api},
        budget_exhausted=budget_exhausted,
    )


# The two routes of a config from before issue 13 (what the settings derive without `routes:`).
TWO_ROUTES = [
    RouteEntry(name="local-vllm", route_class="standard", locality="local",
               capabilities=["chat", "tools", "json_schema"], context_tokens=32768, cost_rank=1),
    RouteEntry(name="api-gpt52", route_class="high", locality="external",
               capabilities=["chat", "tools", "json_schema", "vision"], context_tokens=200_000, cost_rank=3),
]


def routing_input(runtime: RuntimeSignals | None = None, **attributes: object) -> RoutingInput:
    """An input for tenant acme over TWO_ROUTES; keyword arguments override the request
    attributes (and ``routes``)."""
    fields: dict[str, object] = {
        "data_sensitivity": "internal",
        "usecase_class": "chat",
        "tenant": "acme",
        "business_unit": "claims",
        "user_role": "analyst",
        "routes": TWO_ROUTES,
        **attributes,
    }
    return RoutingInput(runtime_signals=runtime or signals(), **fields)  # type: ignore[arg-type]
