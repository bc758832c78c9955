"""The tool gateway's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import APPROVALS, KV_APPROVALS, KV_KEYS, KV_POLICIES, KV_RATELIMITS

STAGES: Final = ("toolgateway", "approval")
QUEUE: Final = "toolgateway"
# Users that call the tool gateway: a call parked for human approval is answered later by
# whichever tool gateway worker sees the decision.
TOOL_CALLERS: Final = ("agent", "operator")

CONTRACT: Final = c.ServiceContract(
    name="toolgateway",
    description="Tool gateway (PEP): answers tool calls, asks humans for approval",
    serves=(
        c.Serves(c.TOOL_CALL, c.TOOL_CALL_RESULT, queue=QUEUE),
        c.Serves(c.TOOL_LIST, c.TOOL_CATALOG, queue=QUEUE),
        c.Serves(c.TOOL_DECIDE, c.DECISION_REPLY, queue=QUEUE),
    ),
    requests=(c.Requests(c.DLP_SCREEN, c.SCREEN_REPLY),),  # tool arguments and results
    publishes=(
        c.Publishes(c.APPROVAL_REQUESTED),
        c.Publishes(c.APPROVAL_DECIDED),
        c.Publishes(c.AUDIT_EVENT, {"stage": STAGES}),
    ),
    reads_streams=(APPROVALS,),
    kv_writes=(KV_RATELIMITS, KV_APPROVALS),
    kv_reads=(KV_KEYS, KV_POLICIES),  # approvers' credentials (issue 14), the tool policy (17)
    answers_later=TOOL_CALLERS,
)
