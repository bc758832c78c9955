"""Settings live with their service (issue 11): the sections one service reads are modelled
and validated by that service, from the same platform config file users always wrote; the
shared ``PlatformConfig`` ignores them, so a mistake in one stops only the service (and
``stellwerk up``), not every process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.finops.settings import FinOpsConfig
from services.gateway.settings import GatewayConfig
from services.runtime.settings import DEFAULT_CONFIG, PlatformConfig, load_config
from services.toolgateway.settings import ToolConfig

SERVICE_SECTIONS = {
    "finops": (FinOpsConfig, {"gpu_classes", "price_table", "budgets"}),
    "gateway": (GatewayConfig, {"gateway_limits", "rate_limits"}),
    "toolgateway": (ToolConfig, {"tool_servers", "tool_rate_limits", "tool_approvals"}),
}


def written(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(changes)
    path = tmp_path / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_each_section_has_one_owner_and_the_shared_model_has_none_of_them() -> None:
    owned = [name for _, names in SERVICE_SECTIONS.values() for name in names]
    assert len(owned) == len(set(owned))
    for model, names in SERVICE_SECTIONS.values():
        assert set(model.model_fields) == names
    assert not set(owned) & set(PlatformConfig.model_fields)


# Read by several services, so shared (docs/architecture.md): ``console_oidc`` too — the console
# signs in with it and the tool gateway accepts tokens issued to its client from approvers.
SHARED_SECTIONS = {"api_keys", "deployments", "routes", "oidc", "console_oidc", "currency", "finops_timezone"}


def test_sections_several_services_read_stay_shared() -> None:
    assert set(PlatformConfig.model_fields) >= SHARED_SECTIONS


def test_the_shipped_config_file_gives_each_service_its_sections() -> None:
    finops = FinOpsConfig.load(DEFAULT_CONFIG)
    assert [g.name for g in finops.gpu_classes] == ["h100-80gb"]
    assert finops.price_table.usd_rate == 0.86 and len(finops.price_table.entries) == 4
    assert {b.id for b in finops.budgets} == {"acme-monthly", "claims-daily", "api-gpt52-monthly"}
    gateway = GatewayConfig.load(DEFAULT_CONFIG)
    users = gateway.rate_limits.users["*"]
    assert (users.requests, users.tokens, users.per_s) == (1200, 2_000_000, 60)
    assert gateway.gateway_limits.max_concurrent_per_key == 256  # not in the file: the default


def test_a_file_without_the_sections_gets_the_defaults(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for _, names in SERVICE_SECTIONS.values():
        for name in names:
            raw.pop(name, None)
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert FinOpsConfig.load(path) == FinOpsConfig()
    assert GatewayConfig.load(path) == GatewayConfig()
    load_config(path)


@pytest.mark.parametrize(("section", "broken", "owner"), [
    ("price_table", {"entries": [{"deployment": "api-gpt52-1", "valid_from": "2026-01-01", "input_per_1k": -1}]},
     FinOpsConfig),
    ("budgets", [{"id": "b", "scope": "galaxy", "scope_id": "x", "limit": 1}], FinOpsConfig),
    ("rate_limits", {"users": {"*": {"requests": 0}}}, GatewayConfig),
    ("gateway_limits", {"max_json_depth": 2}, GatewayConfig),
])
def test_a_broken_section_is_refused_by_its_service_only(
    tmp_path: Path, section: str, broken: object, owner: type[FinOpsConfig] | type[GatewayConfig]
) -> None:
    path = written(tmp_path, **{section: broken})
    with pytest.raises(ValidationError, match=section):
        owner.load(path)
    load_config(path)  # every other service still starts
