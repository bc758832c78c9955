"""The tool policy: its own case table, and the ways it must fail closed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.router.policy_store import check_policy_dir
from services.toolgateway.policy import (
    ENTRYPOINT,
    Annotations,
    ToolPolicy,
    ToolPolicyInput,
    ToolPolicyUnavailable,
)
from services.toolgateway.settings import SHIPPED_POLICY_DIR


def _input(role: str = "analyst", server: str = "search", tool: str = "web_search", tenant: str = "acme-insurance",
           read_only: bool | None = True) -> ToolPolicyInput:
    return ToolPolicyInput(
        tenant=tenant, business_unit="claims", user_role=role, usecase_class="chat", server=server, tool=tool,
        annotations=Annotations(read_only=read_only),
    )


def test_shipped_policy_passes_its_case_table() -> None:
    check_policy_dir(SHIPPED_POLICY_DIR, ENTRYPOINT)  # raises with every failed case


def test_every_decision_carries_rule_and_version() -> None:
    verdict = ToolPolicy(SHIPPED_POLICY_DIR).decide(_input())
    assert verdict.allow
    assert verdict.rule_id == "role.allowed"
    assert verdict.policy_version.startswith("sha256:")


def test_server_wildcard_and_missing_annotations(tmp_path: Path) -> None:
    policy = ToolPolicy(SHIPPED_POLICY_DIR)
    # support-agent has tickets.*: a tool nobody listed is allowed, and critical because its
    # server does not declare it read-only.
    verdict = policy.decide(_input("support-agent", "tickets", "archive_ticket", read_only=None))
    assert (verdict.allow, verdict.approval_required) == (True, True)


def test_tenant_allow_list_restricts_every_role(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    data = json.loads((directory / "data.json").read_text())
    data["toolgateway"]["tenants"]["acme-insurance"] = {"allowed_tools": ["tickets.get_ticket"]}
    (directory / "data.json").write_text(json.dumps(data))
    policy = ToolPolicy(directory)
    assert policy.decide(_input("support-agent", "tickets", "get_ticket")).allow
    refused = policy.decide(_input("support-agent", "search", "web_search"))
    assert (refused.allow, refused.rule_id) == (False, "tenant.tool_not_allowed")


def test_malformed_data_fails_closed(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    data = json.loads((directory / "data.json").read_text())
    data["toolgateway"]["roles"] = ["not", "an", "object"]
    (directory / "data.json").write_text(json.dumps(data))
    with pytest.raises(ToolPolicyUnavailable):
        ToolPolicy(directory).decide(_input())


def test_missing_policy_dir_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(ToolPolicyUnavailable):
        ToolPolicy(tmp_path / "nowhere")


def test_four_eyes_tools_need_two_approvers(tmp_path: Path) -> None:
    """Issue 14: a critical call of a tool in ``four_eyes_tools`` needs two distinct approvers;
    every other call needs one, and a call that needs no approval none."""
    shipped = ToolPolicy(SHIPPED_POLICY_DIR).decide(_input("support-agent", "tickets", "create_ticket", read_only=False))
    assert (shipped.approval_required, shipped.approvals_required) == (True, 1)
    directory = tmp_path / "policy"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    data = json.loads((directory / "data.json").read_text())
    data["toolgateway"]["four_eyes_tools"] = ["tickets.update_ticket_status"]
    (directory / "data.json").write_text(json.dumps(data))
    policy = ToolPolicy(directory)
    four_eyes = policy.decide(_input("support-agent", "tickets", "update_ticket_status", read_only=False))
    assert (four_eyes.approval_required, four_eyes.approvals_required) == (True, 2)
    assert policy.decide(_input("support-agent", "tickets", "create_ticket", read_only=False)).approvals_required == 1
