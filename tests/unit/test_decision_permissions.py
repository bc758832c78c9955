"""Issue 14: who may publish approval decisions (``stellwerk.v1.tool.decide``) — only the
console and the operators' CLI. No service, no agent: an agent that could publish there could
at least try to approve its own call (the tool gateway would still refuse it: it verifies the
credential, tests/toolgateway/test_toolgateway_in_mesh.py)."""

from __future__ import annotations

from schemas import subjects
from stellwerk import nats_auth


def _may_publish(pattern: str, subject: str) -> bool:
    parts, tokens = pattern.split("."), subject.split(".")
    for i, part in enumerate(parts):
        if part == ">":
            return len(tokens) > i
        if i >= len(tokens) or (part != "*" and part != tokens[i]):
            return False
    return len(parts) == len(tokens)


def test_only_the_console_and_operators_publish_decisions() -> None:
    deciders = {p.user for p in nats_auth.principals()
                if any(_may_publish(pattern, subjects.TOOL_APPROVAL_DECIDE) for pattern in p.permissions.publish)}
    # (compose/nats/auth.conf and deploy/k8s/auth.conf are generated from these principals;
    # tests/ops/test_nats_auth.py fails when they are stale.)
    assert deciders == {"console", "operator"}

