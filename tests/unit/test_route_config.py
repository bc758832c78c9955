"""Routes as data (issue 13): the config's route catalogue, its validation and named models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.runtime.settings import DEFAULT_CONFIG, PlatformConfig


def _default() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return config


def test_default_config_declares_the_route_portfolio() -> None:
    config = PlatformConfig.model_validate(_default())
    routes = {r.name: r for r in config.routes}
    assert set(routes) == {"local-vllm", "api-gpt52", "local-small", "local-embeddings"}
    assert routes["local-small"].cost_rank < routes["local-vllm"].cost_rank < routes["api-gpt52"].cost_rank
    assert routes["local-embeddings"].capabilities == ["embeddings"]
    assert routes["api-gpt52"].locality == "external"


def test_a_config_without_routes_derives_them_from_its_deployments() -> None:
    raw = _default()
    del raw["routes"]
    raw["deployments"] = [d for d in raw["deployments"] if d["route"] in ("local-vllm", "api-gpt52")]
    config = PlatformConfig.model_validate(raw)
    derived = {r.name: (r.route_class, r.locality, r.cost_rank) for r in config.routes}
    assert derived == {"local-vllm": ("standard", "local", 1), "api-gpt52": ("high", "external", 3)}
    assert all(r.capabilities == ["chat", "tools", "json_schema"] for r in config.routes)


def test_a_deployment_must_name_a_declared_route() -> None:
    raw = _default()
    raw["deployments"][0]["route"] = "nowhere"
    with pytest.raises(ValidationError, match="undeclared routes"):
        PlatformConfig.model_validate(raw)


def test_every_route_needs_a_deployment() -> None:
    raw = _default()
    raw["routes"].append({"name": "api-long", "class": "long-context", "locality": "external",
                          "capabilities": ["chat"], "context_tokens": 1_000_000, "cost_rank": 5})
    with pytest.raises(ValidationError, match="no deployment"):
        PlatformConfig.model_validate(raw)


def test_resolve_model_names_a_route_a_class_or_a_deployment_model() -> None:
    config = PlatformConfig.model_validate(_default())
    assert config.resolve_model("local-small") == "local-small"
    assert config.resolve_model("small") == "small"
    assert config.resolve_model("stellwerk-embed") == "local-embeddings"
    assert config.resolve_model("gpt-9") is None


def test_model_aliases_map_names_clients_already_send() -> None:
    config = PlatformConfig.model_validate(
        {**_default(), "model_aliases": {"gpt-4o": "stellwerk", "gpt-4o-mini": "small", "text-embedding-3-small":
                                         "local-embeddings"}})
    assert config.knows_model("gpt-4o") and config.resolve_model("gpt-4o") is None  # the policy chooses
    assert config.resolve_model("gpt-4o-mini") == "small"
    assert config.resolve_model("text-embedding-3-small") == "local-embeddings"
    assert not config.knows_model("gpt-9") and config.knows_model("stellwerk")
