"""The approval state machine (pure) and its KV store (real nats-server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest_asyncio
from nats.js.kv import KeyValue

from schemas.events import ToolCallRequested
from services.runtime.bus import connect, ensure_topology
from services.toolgateway import approvals
from services.toolgateway.approval_store import ApprovalStore
from services.toolgateway.approvals import ApprovalRecord, Rejection

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def record(*, user_id: str | None = "erika", timeout_s: float = 900, deadline_s: float = 3600) -> ApprovalRecord:
    call = ToolCallRequested(
        request_id="r1", correlation_id="r1", deadline=T0 + timedelta(seconds=deadline_s), tenant="acme",
        business_unit="claims", user_role="support-agent", usecase_class="chat", tool="create_ticket",
        server="tickets", agent_id="agent-7", user_id=user_id, call_id="c1",
    )
    return ApprovalRecord(
        approval_id="a1", state="pending", request=call, reply_to="_INBOX.x", rule_id="role.allowed.critical_approval",
        policy_version="sha256:0123456789abcdef", arguments_sha256="0" * 64, created_at=T0,
        expires_at=approvals.expiry(T0, call.deadline, timeout_s),
    )


def test_expiry_is_the_earlier_of_policy_timeout_and_deadline() -> None:
    assert record(timeout_s=900, deadline_s=3600).expires_at == T0 + timedelta(seconds=900)
    assert record(timeout_s=900, deadline_s=60).expires_at == T0 + timedelta(seconds=60)
    deadline = T0 + timedelta(seconds=60)
    assert approvals.expiry(T0, deadline, 900, margin_s=2) == T0 + timedelta(seconds=58)


def test_approve_then_finish() -> None:
    approved = approvals.decide(record(), approve=True, approver="boss", reason=None, now=T0 + timedelta(seconds=30))
    assert isinstance(approved, ApprovalRecord)
    assert (approved.state, approved.approver, approved.wait_s()) == ("approved", "boss", 30.0)
    done = approvals.finish(approved, ok=True, now=T0 + timedelta(seconds=31))
    assert isinstance(done, ApprovalRecord) and done.state == "completed" and done.terminal


def test_deny_needs_a_reason() -> None:
    assert approvals.decide(record(), approve=False, approver="boss", reason=None, now=T0) == Rejection("reason_required")
    denied = approvals.decide(record(), approve=False, approver="boss", reason="wrong_ticket", now=T0)
    assert isinstance(denied, ApprovalRecord) and (denied.state, denied.reason) == ("denied", "wrong_ticket")


def test_four_eyes() -> None:
    assert approvals.decide(record(), approve=True, approver="erika", reason=None, now=T0) == Rejection("self_approval")
    assert approvals.decide(record(), approve=True, approver="agent-7", reason=None, now=T0) == Rejection("self_approval")
    # Denying one's own agent's call is always allowed.
    assert isinstance(approvals.decide(record(), approve=False, approver="erika", reason="oops", now=T0), ApprovalRecord)


def test_four_eyes_needs_two_distinct_approvers() -> None:
    """Issue 14: where the policy asks for two approvals, the first keeps the call pending with
    its approver recorded; the same person again is refused; a second person approves it."""
    two = msgspec.structs.replace(record(), approvals_required=2)
    first = approvals.decide(two, approve=True, approver="boss", reason=None, now=T0)
    assert isinstance(first, ApprovalRecord)
    assert (first.state, first.approvers, first.approver) == ("pending", ["boss"], None)
    assert approvals.decide(first, approve=True, approver="boss", reason=None, now=T0) == Rejection("same_approver")
    assert approvals.decide(first, approve=True, approver="erika", reason=None, now=T0) == Rejection("self_approval")
    second = approvals.decide(first, approve=True, approver="deputy", reason=None, now=T0 + timedelta(seconds=5))
    assert isinstance(second, ApprovalRecord)
    assert (second.state, second.approvers, second.approver) == ("approved", ["boss", "deputy"], "deputy")
    # One denial ends it, also after a first approval (and by the first approver).
    denied = approvals.decide(first, approve=False, approver="boss", reason="changed_mind", now=T0)
    assert isinstance(denied, ApprovalRecord) and (denied.state, denied.approver) == ("denied", "boss")


def test_a_persons_key_and_token_are_one_approver() -> None:
    """Review 1a: a key whose ``owner`` is the ``oidc:<sub>`` of a person's single sign-on counts
    as that person — with both, they are still one of the four eyes, and a rotated key with
    its predecessor is one approver too. Pure: a KeyRing fed records, no server."""
    from services.runtime.keys import KeyRing
    from services.runtime.settings import ApiKey
    from services.toolgateway.approvers import Approvers
    from services.toolgateway.settings import ToolApprovals

    def key(key_id: str, **extra: str) -> ApiKey:
        return ApiKey(key_id=key_id, key_sha256="0" * 64, tenant="acme",
                      business_unit="claims", user_role="approver", **extra)

    ring = KeyRing()
    for fields in ({"key_id": "key-alice", "owner": "oidc:alice"}, {"key_id": "key-bob"},
                   {"key_id": "key-bob2", "lineage": "key-bob"}):
        ring.apply(fields["key_id"], msgspec.json.encode({
            "key_sha256": "0" * 64, "tenant": "acme", "business_unit": "claims", "user_role": "approver",
            "created_by": "test", **fields}))
    people = Approvers(ring, None, ToolApprovals())
    token = key("oidc:alice")  # what a verified single-sign-on token of subject alice proves
    assert people.person(key("key-alice")) == people.person(token) == "oidc:alice"
    assert people.person(key("key-bob2")) == people.person(key("key-bob")) == "key-bob"

    two = msgspec.structs.replace(record(), approvals_required=2)
    first = approvals.decide(two, approve=True, approver=people.person(key("key-alice")), reason=None, now=T0)
    assert isinstance(first, ApprovalRecord)
    again = approvals.decide(first, approve=True, approver=people.person(token), reason=None, now=T0)
    assert again == Rejection("same_approver")
    second = approvals.decide(first, approve=True, approver=people.person(key("key-bob2")), reason=None, now=T0)
    assert isinstance(second, ApprovalRecord) and second.approvers == ["oidc:alice", "key-bob"]


def test_terminal_states_are_never_left() -> None:
    denied = approvals.decide(record(), approve=False, approver="boss", reason="no", now=T0)
    assert isinstance(denied, ApprovalRecord)
    assert approvals.decide(denied, approve=True, approver="boss", reason=None, now=T0) == Rejection("already_decided")
    assert approvals.expire(denied, T0 + timedelta(days=1)) == Rejection("not_pending")
    assert approvals.finish(denied, ok=True, now=T0) == Rejection("not_approved")


def test_expire_only_after_expiry() -> None:
    pending = record(timeout_s=60)
    assert approvals.expire(pending, T0 + timedelta(seconds=59)) == Rejection("not_expired")
    assert approvals.decide(pending, approve=True, approver="boss", reason=None,
                            now=T0 + timedelta(seconds=60)) == Rejection("expired")
    expired = approvals.expire(pending, T0 + timedelta(seconds=60))
    assert isinstance(expired, ApprovalRecord)
    assert (expired.state, expired.approver, expired.reason) == ("expired", "system", "approval_timeout")


def test_stale_and_forgettable() -> None:
    approved = approvals.decide(record(), approve=True, approver="boss", reason=None, now=T0)
    assert isinstance(approved, ApprovalRecord)
    assert not approvals.stale(approved, T0 + timedelta(seconds=119), lease_s=120)
    assert approvals.stale(approved, T0 + timedelta(seconds=120), lease_s=120)
    done = approvals.finish(approved, ok=False, now=T0 + timedelta(seconds=5))
    assert isinstance(done, ApprovalRecord)
    assert not approvals.forgettable(done, T0 + timedelta(seconds=6), keep_s=3600)
    assert approvals.forgettable(done, T0 + timedelta(seconds=3605), keep_s=3600)


@pytest_asyncio.fixture
async def kv(nats_url: str) -> AsyncIterator[KeyValue]:
    nc = await connect(nats_url, "test-approvals", persistent=False)
    await ensure_topology(nc.jetstream())
    yield await nc.jetstream().key_value("approvals")
    await nc.close()


async def test_store_compare_and_set_has_one_winner(kv: KeyValue) -> None:
    store = ApprovalStore(kv)
    await store.create(record(), {"title": "Printer on fire"})
    assert await store.arguments("a1") == {"title": "Printer on fire"}
    first = await store.transition("a1", lambda r: approvals.decide(r, approve=True, approver="boss", reason=None, now=T0))
    second = await store.transition("a1", lambda r: approvals.decide(r, approve=False, approver="x", reason="no", now=T0))
    assert isinstance(first, ApprovalRecord) and first.state == "approved"
    assert second == Rejection("already_decided")
    assert await store.transition("missing", lambda r: r) == Rejection("not_found")
    await store.forget_arguments("a1")
    assert await store.arguments("a1") is None
    assert [r.state for r in await store.records()] == ["approved"]
