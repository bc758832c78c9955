"""The tool policy as a bundle from KV ``policies`` (issue 17): a pushed version stays in force
although the gateway re-checks its directory every second, until the directory changes after
the push (whichever change came last wins); a bundle that does not compile changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.runtime.rego import PolicyError, PolicySource, read_policy_dir
from services.toolgateway.policy import Annotations, ToolPolicy, ToolPolicyInput
from services.toolgateway.settings import SHIPPED_POLICY_DIR

ANALYST = ToolPolicyInput(tenant="acme-insurance", business_unit="claims", user_role="analyst",
                          usecase_class="chat", server="search", tool="web_search",
                          annotations=Annotations(read_only=True))


def test_pushed_tool_policy_wins_until_the_directory_changes(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    policy = ToolPolicy(directory, check_interval_s=0.0)  # re-reads the directory on every decision
    shipped = read_policy_dir(directory)
    assert policy.decide(ANALYST).rule_id == "role.allowed"

    modules = {name: text.replace('"role.allowed"', '"role.allowed_pushed"') for name, text in shipped.modules.items()}
    pushed = PolicySource(modules=modules, data=shipped.data, version="sha256:00000000000000aa")
    policy.replace(pushed)
    for _ in range(3):  # the directory check does not undo the push
        verdict = policy.decide(ANALYST)
        assert (verdict.rule_id, verdict.policy_version) == ("role.allowed_pushed", pushed.version)

    with pytest.raises(PolicyError):
        policy.replace(PolicySource(modules={"tools.rego": "package broken ("}, data={}, version="sha256:bad"))
    assert policy.decide(ANALYST).policy_version == pushed.version

    # An edit of the directory after the push is the later change: it takes over.
    (directory / "tools.rego").write_text((directory / "tools.rego").read_text() + "\n# edited\n")
    verdict = policy.decide(ANALYST)
    assert (verdict.rule_id, verdict.policy_version) == ("role.allowed", read_policy_dir(directory).version)
