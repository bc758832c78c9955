"""Human approval of critical tool calls: the record and its state machine. Pure.

    pending ──approve──▶ approved ──finish──▶ completed | failed
       │ ──approve (four eyes: the first of two)──▶ pending, with its first approver
       │ ──deny──▶ denied            └─ not finished within the lease ──▶ failed
       └ ──deadline or policy timeout──▶ expired

Terminal states are never left. An approved call is executed at most once: a worker that
dies while executing it leaves it ``approved``, and after the execution lease it is failed,
not retried — critical tools write, and a second write is worse than a reported failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import msgspec

from schemas.events import DlpDecision, ParamShape, ToolCallRequested
from schemas.vocabulary import ApprovalState, Ident, Sha256, Timestamp

TERMINAL: Final[frozenset[ApprovalState]] = frozenset({"denied", "expired", "completed", "failed"})
SYSTEM_APPROVER: Final = "system"


class ApprovalRecord(msgspec.Struct, kw_only=True):
    """KV ``approvals`` ``call.<approval_id>``. The arguments are kept apart (``args.<id>``)
    and deleted when the call ends; this record is metadata only."""

    approval_id: Ident
    state: ApprovalState
    request: ToolCallRequested  # with empty arguments
    # The caller's reply subject: whichever worker finishes the call answers there, so a
    # caller still waiting gets its result even if the worker that parked the call is gone.
    reply_to: str | None
    rule_id: Ident
    policy_version: Ident
    arguments_sha256: Sha256
    parameter_shape: list[ParamShape] = msgspec.field(default_factory=list)
    injection_action: Ident = "block"
    dlp_input: DlpDecision | None = None
    created_at: Timestamp
    expires_at: Timestamp
    decided_at: Timestamp | None = None
    approver: Ident | None = None
    reason: Ident | None = None
    finished_at: Timestamp | None = None
    # Issue 14: four eyes — how many distinct approvers the policy asks for, and who approved
    # so far (the last of them is ``approver`` once the call is approved).
    approvals_required: int = 1
    approvers: list[Ident] = msgspec.field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def wait_s(self) -> float | None:
        """How long the call waited for its decision."""
        if self.decided_at is None:
            return None
        return (self.decided_at - self.created_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a transition was not made: not_found, already_decided, expired, self_approval,
    same_approver, reason_required, not_pending, not_approved."""

    reason: Ident


def expiry(created_at: datetime, deadline: datetime, timeout_s: float, margin_s: float = 0.0) -> datetime:
    """An approval lasts as long as the policy allows, but ends ``margin_s`` before the
    caller's deadline: after it nobody would receive the result, and the caller should hear
    "expired" rather than time out."""
    return min(deadline - timedelta(seconds=margin_s), created_at + timedelta(seconds=timeout_s))


def decide(
    record: ApprovalRecord, *, approve: bool, approver: str, reason: str | None, now: datetime
) -> ApprovalRecord | Rejection:
    if record.state != "pending":
        return Rejection("already_decided")
    if now >= record.expires_at:
        return Rejection("expired")
    if not approve and not reason:
        return Rejection("reason_required")
    # Four eyes: neither the human an agent acts for nor the agent itself approves its call.
    if approve and approver in {record.request.user_id, record.request.agent_id}:
        return Rejection("self_approval")
    # ... and where the policy asks for two, the second approver is another person.
    if approve and approver in record.approvers:
        return Rejection("same_approver")
    if not approve:  # one denial ends it, whoever approved before
        return msgspec.structs.replace(record, state="denied", decided_at=now, approver=approver, reason=reason)
    approvers = [*record.approvers, approver]
    if len(approvers) < record.approvals_required:
        return msgspec.structs.replace(record, approvers=approvers)  # still pending: the next one decides
    return msgspec.structs.replace(record, state="approved", decided_at=now, approver=approver, reason=reason,
                                   approvers=approvers)


def expire(record: ApprovalRecord, now: datetime) -> ApprovalRecord | Rejection:
    if record.state != "pending":
        return Rejection("not_pending")
    if now < record.expires_at:
        return Rejection("not_expired")
    return msgspec.structs.replace(
        record, state="expired", decided_at=now, approver=SYSTEM_APPROVER, reason="approval_timeout"
    )


def finish(record: ApprovalRecord, *, ok: bool, now: datetime) -> ApprovalRecord | Rejection:
    if record.state != "approved":
        return Rejection("not_approved")
    return msgspec.structs.replace(record, state="completed" if ok else "failed", finished_at=now)


def stale(record: ApprovalRecord, now: datetime, lease_s: float) -> bool:
    """Approved, but its execution has not finished within the lease: its worker is gone."""
    return (
        record.state == "approved"
        and record.decided_at is not None
        and now >= record.decided_at + timedelta(seconds=lease_s)
    )


def forgettable(record: ApprovalRecord, now: datetime, keep_s: float) -> bool:
    """A decided record old enough to leave KV (the APPROVALS stream keeps its events)."""
    ended = record.finished_at or record.decided_at
    return record.terminal and ended is not None and now >= ended + timedelta(seconds=keep_s)
