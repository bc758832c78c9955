"""The tool policy decision: typed input → Rego (``policies/tools.rego``) → ``ToolVerdict``.

Every way the policy can fail (does not load, does not compile, yields nothing, yields a
malformed decision) surfaces as ``ToolPolicyUnavailable``: the gateway refuses the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import msgspec

from schemas.vocabulary import Ident, UsecaseClass
from services.runtime.rego import BundledPolicy, PolicyError, PolicySource

ENTRYPOINT: Final = "stellwerk/tools/decision"


class ToolPolicyUnavailable(RuntimeError):
    """The tool policy could not decide; the call must be refused (fail closed)."""


class Annotations(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the tool's server declares about it (MCP tool annotations)."""

    read_only: bool | None = None
    destructive: bool | None = None


class ToolPolicyInput(msgspec.Struct, kw_only=True):
    tenant: Ident
    business_unit: Ident
    user_role: Ident
    usecase_class: UsecaseClass
    server: Ident
    tool: Ident
    agent_id: Ident | None = None
    application: Ident | None = None
    annotations: Annotations = msgspec.field(default_factory=Annotations)


class ToolVerdict(msgspec.Struct, kw_only=True):
    allow: bool
    rule_id: Ident
    approval_required: bool
    approval_timeout_s: float
    # Issue 14: four eyes — distinct approvers the call needs (2 for ``four_eyes_tools``).
    approvals_required: int = msgspec.field(default=1)
    screen_arguments: Literal["enforce", "record"]
    injection_action: Literal["block", "flag"]
    policy_version: Ident = ""


_to_builtins = msgspec.to_builtins


class ToolPolicy:
    def __init__(self, directory: Path, check_interval_s: float = 1.0) -> None:
        try:
            self._policy = BundledPolicy(directory, ENTRYPOINT, check_interval_s)
        except PolicyError as exc:
            raise ToolPolicyUnavailable(str(exc)) from exc

    @property
    def version(self) -> str:
        return self._policy.current().version

    def replace(self, source: PolicySource) -> None:
        """Install a bundle from KV ``policies`` (whichever change came last wins over the
        directory); raises PolicyError if it does not compile, the old one stays."""
        self._policy.replace(source)

    def decide(self, policy_input: ToolPolicyInput) -> ToolVerdict:
        policy = self._policy.current()
        try:
            output = policy.evaluate(_to_builtins(policy_input))
            verdict = msgspec.convert(output, ToolVerdict)
        except (PolicyError, msgspec.ValidationError) as exc:
            raise ToolPolicyUnavailable(type(exc).__name__) from exc
        verdict.policy_version = policy.version
        return verdict
