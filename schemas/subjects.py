"""Subject names (DESIGN.md §3). Services import these; no subject string literals elsewhere."""

from __future__ import annotations

from typing import Final

from schemas.vocabulary import Stage

PREFIX: Final = "stellwerk.v1"

REQUEST_SUBMITTED: Final = f"{PREFIX}.request.submitted"
REQUEST_SCREENED: Final = f"{PREFIX}.request.screened"
REQUEST_ROUTED: Final = f"{PREFIX}.request.routed"
RESPONSE_GENERATED: Final = f"{PREFIX}.response.generated"
RESPONSE_STREAMING: Final = f"{PREFIX}.response.streaming"
# Streamed answers (issue 12): raw chunks into the memory stream CHUNKS, read in order by the
# one output-DLP worker that took ``response.streaming``; screened deltas to the caller.
CHUNK_PREFIX: Final = f"{PREFIX}.chunk"
CHUNK_ALL: Final = f"{CHUNK_PREFIX}.*"
DELTA_PREFIX: Final = f"{PREFIX}.delta"
DELTA_ALL: Final = f"{DELTA_PREFIX}.*"
# The caller of a streamed request went away (core NATS, from the gateway): inference stops
# the model call, so an abandoned stream pins neither a worker nor the model.
CANCEL_PREFIX: Final = f"{PREFIX}.cancel"
CANCEL_ALL: Final = f"{CANCEL_PREFIX}.*"
RESULT_PREFIX: Final = f"{PREFIX}.result"
RESULT_ALL: Final = f"{RESULT_PREFIX}.*"
USAGE_RECORDED: Final = f"{PREFIX}.usage.recorded"
USAGE_ALL: Final = f"{PREFIX}.usage.>"
AUDIT_PREFIX: Final = f"{PREFIX}.audit"
AUDIT_EVENTS: Final = f"{AUDIT_PREFIX}.*"  # one token: the stage that emitted the event
# Trails: many stages' events of one request in one message, written by the stage that ends
# it (``audit.trail.<stage>``: two tokens, outside ``audit.*``; the intake filters both).
AUDIT_TRAIL_PREFIX: Final = f"{AUDIT_PREFIX}.trail"
AUDIT_TRAILS: Final = f"{AUDIT_TRAIL_PREFIX}.*"
AUDIT_CHAIN_PREFIX: Final = f"{AUDIT_PREFIX}.chain"
AUDIT_CHAIN_ALL: Final = f"{AUDIT_CHAIN_PREFIX}.*"
AUDIT_ALL: Final = f"{AUDIT_PREFIX}.>"
FINOPS_ALERT: Final = f"{PREFIX}.finops.alert"
TOOL_CALL_REQUESTED: Final = f"{PREFIX}.tool.call.requested"
TOOL_APPROVAL_REQUESTED: Final = f"{PREFIX}.tool.approval.requested"
TOOL_APPROVAL_DECIDED: Final = f"{PREFIX}.tool.approval.decided"
TOOL_APPROVAL_ALL: Final = f"{PREFIX}.tool.approval.*"
# Core NATS request-reply to the tool gateway (queue group ``toolgateway``). Deliberately
# outside ``tool.approval.*``: the APPROVALS stream would store these and answer the
# requester with its PubAck before the gateway could reply.
TOOL_LIST: Final = f"{PREFIX}.tool.list"  # ToolListRequested -> ToolCatalog
TOOL_APPROVAL_DECIDE: Final = f"{PREFIX}.tool.decide"  # ApprovalDecisionRequested -> ...Reply
# Core NATS request-reply to the DLP workers (queue group ``dlp``): ScreenRequest ->
# ScreenReply. The tool gateway screens tool arguments and results here, with the same guard
# (and the same org-identifier reload) as the chat path.
DLP_SCREEN: Final = f"{PREFIX}.dlp.screen"
DLQ_PREFIX: Final = f"{PREFIX}.dlq"
DLQ_ALL: Final = f"{DLQ_PREFIX}.*"
CONTROL_POLICY_PUSH: Final = f"{PREFIX}.control.policy.push"
# Two tokens after ``audit``, so the audit intake (``audit.*``) never consumes them.
AUDIT_CHECKPOINT_PREFIX: Final = f"{AUDIT_PREFIX}.checkpoint"
AUDIT_CHECKPOINT_ALL: Final = f"{AUDIT_CHECKPOINT_PREFIX}.*"


def token(value: str) -> str:
    """A value made safe as one subject or KV-key token (no dots, wildcards or spaces)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in value)


def result(request_id: str) -> str:
    return f"{RESULT_PREFIX}.{request_id}"


def audit(stage: Stage) -> str:
    return f"{AUDIT_PREFIX}.{stage}"


def chunk(request_id: str) -> str:
    return f"{CHUNK_PREFIX}.{request_id}"


def cancel(request_id: str) -> str:
    return f"{CANCEL_PREFIX}.{request_id}"


def delta(request_id: str) -> str:
    return f"{DELTA_PREFIX}.{request_id}"


def audit_trail(stage: Stage) -> str:
    return f"{AUDIT_TRAIL_PREFIX}.{stage}"


def audit_chain(partition: str) -> str:
    return f"{AUDIT_CHAIN_PREFIX}.{partition}"


def dlq(service: str) -> str:
    return f"{DLQ_PREFIX}.{service}"


def audit_checkpoint(partition: str) -> str:
    return f"{AUDIT_CHECKPOINT_PREFIX}.{partition}"
