"""Which audit events operators watch: the signals behind the runbook counters."""

from __future__ import annotations

from typing import Final, Literal

from schemas.events import AuditEvent

Signal = Literal["dlp_block", "tool_denial", "budget_breach"]

_DLP_STAGES: Final = frozenset({"dlp_input", "dlp_output"})
_TOOL_STAGES: Final = frozenset({"toolgateway", "approval"})
# The tool gateway audits a policy, schema, limit or injection refusal as "refused"; a human's
# "no" arrives from the approval stage as "denied".
_DENIED: Final = frozenset({"refused", "deny", "denied", "rejected", "blocked", "block"})
# FinOps audits each threshold crossing as budget_<level>; only the acting level is a breach.
_BUDGET_OUTCOMES: Final = frozenset({"budget_exhausted"})


def signal_of(event: AuditEvent) -> Signal | None:
    if event.stage in _DLP_STAGES and event.outcome == "block":
        return "dlp_block"
    if event.stage in _TOOL_STAGES and event.outcome in _DENIED:
        return "tool_denial"
    if event.reason_code == "budget_exhausted" or (event.stage == "finops" and event.outcome in _BUDGET_OUTCOMES):
        return "budget_breach"
    return None
