"""Guard reviews and streamed moderation (issue 16), without a server: the work item made from
the guard's ``review`` record (metadata only), resolving it once, the resolution's audit
record; the stream's moderation verdicts (block ends it, replace ends it with the fixed
answer after what was released and ``content_filter``, the strictest verdict is recorded)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from schemas.events import AuditEvent, DlpDecision, ResponseStreaming, RoutingDecision, deadline_in
from schemas.kv import GuardReview
from services.dlp.guard import PolicyContext
from services.dlp.guardrails import GuardDecision, Guardrails, guard_audit, stricter
from services.dlp.handlers import SAFE_ANSWER_SEPARATOR, moderate_stream, replace_stream
from services.dlp.reviews import Refused, resolution_audit, resolve, review_from_audit, review_id, reviews_in
from services.dlp.settings import DlpSettings
from services.runtime.effects import Fail, Record, Reply
from stellwerk import nats_auth

HARM = "Here are suicide methods and how to overdose on your pills."
VIOLENCE = "Then I will kill them all and stab the family."


@pytest.fixture(scope="module")
def guardrails() -> Guardrails:
    return Guardrails(DlpSettings().guard_policy_dir)


DLP = DlpDecision(direction="output", action="allow", rule_id="dlp.allow", policy_version="sha256:0123456789abcdef",
                  language="en", derived_sensitivity="internal", has_pii=False, has_medical_terms=False,
                  medical_term_density=0.0)


def streaming(unit: str = "hospital") -> ResponseStreaming:
    return ResponseStreaming(request_id="s1", correlation_id="c1", tenant="clinic", business_unit=unit,
                             user_role="physician", usecase_class="chat", deadline=deadline_in(30),
                             end_user="u:abc", messages=[], dlp_input=msgspec.structs.replace(DLP, direction="input"),
                             routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p"))


def decision(action: str, rule_id: str, **more: object) -> GuardDecision:
    return GuardDecision(direction="output", action=action, rule_id=rule_id,  # type: ignore[arg-type]
                         policy_version="sha256:0123456789abcdef", categories=[], **more)  # type: ignore[arg-type]


# -- reviews -----------------------------------------------------------------------------------

def review_record(guardrails: Guardrails) -> AuditEvent:
    context = PolicyContext(usecase_class="decision_support", tenant="acme", business_unit="claims",
                            user_role="analyst")
    verdict = guardrails.check(["Should I sue my neighbour? Which lawyer should I take to court?"],
                               direction="input", context=context)
    assert (verdict.action, verdict.rule_id) == ("review", "guard.review.topic.legal_advice")
    event = streaming("claims")
    return guard_audit(msgspec.structs.replace(event, usecase_class="decision_support"), verdict)


def test_a_review_record_becomes_a_work_item_with_metadata_only(guardrails: Guardrails) -> None:
    record = review_record(guardrails)
    review = review_from_audit(record)
    assert review is not None
    assert review.review_id == review_id("s1", "input") and len(review.review_id) == 16
    assert (review.request_id, review.tenant, review.usecase_class, review.direction) == (
        "s1", "clinic", "decision_support", "input")
    assert review.rule_id == "guard.review.topic.legal_advice" and review.policy_version.startswith("sha256:")
    assert review.categories[0].name == "legal_advice" and review.categories[0].score >= 0.6
    assert review.status == "open" and review.end_user == "u:abc"
    assert "neighbour" not in msgspec.json.encode(review).decode()  # never the text
    # Only ``review`` records make items, wherever they sit among the effects.
    allow = msgspec.structs.replace(record, outcome="allow")
    assert review_from_audit(allow) is None
    effects = [Record([allow]), Fail("guard_blocked_input", "dlp_input", audits=[record])]
    assert [r.review_id for r in reviews_in(effects)] == [review.review_id]  # type: ignore[arg-type]


def test_a_review_is_resolved_once_and_audited(guardrails: Guardrails) -> None:
    review = review_from_audit(review_record(guardrails))
    assert review is not None
    now = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    resolved = resolve(review, "alice", "dismissed", now)
    assert isinstance(resolved, GuardReview)
    assert (resolved.status, resolved.resolution, resolved.resolved_by, resolved.resolved_at) == (
        "resolved", "dismissed", "alice", now)
    assert resolve(resolved, "bob", "confirmed") == Refused("already_resolved")
    audit = resolution_audit(resolved)
    assert (audit.stage, audit.outcome, audit.request_id, audit.rule_id) == (
        "approval", "review_dismissed", "s1", "guard.review.topic.legal_advice")
    assert audit.attributes == {"kind": "guard_review", "review_id": review.review_id, "direction": "input",
                                "actor": "alice"}


def test_the_dlp_workers_file_reviews_and_operators_and_the_console_resolve_them() -> None:
    def may_write(user: str) -> bool:
        return "$KV.guard_reviews.>" in nats_auth.principal(user).permissions.publish

    assert may_write("dlp") and may_write("operator") and may_write("console")
    assert not may_write("gateway") and not may_write("client")
    assert "stellwerk.v1.audit.approval" in nats_auth.principal("console").permissions.publish


# -- streamed answers --------------------------------------------------------------------------

def test_block_ends_the_stream_and_replace_is_left_to_the_stream(guardrails: Guardrails) -> None:
    blocked = moderate_stream(guardrails, streaming("claims"), "How to make a bomb: step 1, mix ammonium nitrate, "
                              "then the detonator.")
    assert blocked.verdict is not None and blocked.verdict.action == "block"
    assert blocked.stop is not None and isinstance(blocked.stop[0], Fail)
    assert blocked.stop[0].result_fields["finish_reason"] == "content_filter"
    replaced = moderate_stream(guardrails, streaming("hospital"), HARM)
    assert replaced.stop is None and replaced.verdict is not None and replaced.verdict.action == "replace"
    fine = moderate_stream(guardrails, streaming("claims"), "Die Zusammenfassung folgt.")
    assert fine.stop is None and fine.verdict is not None and fine.verdict.action == "allow"


def test_replace_mid_stream_keeps_what_was_released_then_the_fixed_answer(guardrails: Guardrails) -> None:
    verdict = moderate_stream(guardrails, streaming("hospital"), HARM).verdict
    assert verdict is not None and verdict.safe_answer
    effects = replace_stream(streaming(), verdict, "Die Zusammenfassung folgt.", DLP)
    record, reply = effects
    assert isinstance(record, Record) and isinstance(reply, Reply)
    assert [(e.stage, e.outcome) for e in record.events] == [("guard", "replace"), ("dlp_output", "allow")]
    result = reply.result
    assert (result.status, result.finish_reason) == ("ok", "content_filter")
    assert result.content == "Die Zusammenfassung folgt." + SAFE_ANSWER_SEPARATOR + verdict.safe_answer
    assert "suicide" not in repr(record.events)
    first = replace_stream(streaming(), verdict, "", None)  # nothing released yet: only the fixed answer
    assert isinstance(first[1], Reply) and first[1].result.content == verdict.safe_answer


def test_the_strictest_verdict_is_the_streams_record() -> None:
    allow, flag, review = (decision("allow", "guard.allow"), decision("flag", "guard.flag.x"),
                           decision("review", "guard.review.moderation.violence"))
    seen = None
    for verdict in (allow, review, flag, allow):
        seen = stricter(seen, verdict)
    assert seen is review
    assert stricter(None, None) is None and stricter(flag, None) is flag


# -- the store, on a real nats-server ------------------------------------------------------------

async def test_the_store_files_once_and_resolves_once(nats_url: str, guardrails: Guardrails) -> None:
    """A redelivered request files its item once (what a human did stays); of two operators
    resolving at once, exactly one wins; the open list and the full list say so."""
    import asyncio

    import nats
    from nats.js.api import KeyValueConfig

    from services.dlp.reviews import ReviewStore, file_reviews

    connection = await nats.connect(nats_url)
    try:
        kv = await connection.jetstream().create_key_value(KeyValueConfig(bucket="guard_reviews", history=5))
        store = ReviewStore(kv)
        record = review_record(guardrails)
        effects = [Record([record])]
        assert await file_reviews(store, effects) == 1
        rid = review_id("s1", "input")
        assert [r.review_id for r in await store.items()] == [rid]
        outcomes = await asyncio.gather(store.resolve(rid, "alice", "confirmed"),
                                        store.resolve(rid, "bob", "dismissed"))
        winners = [o for o in outcomes if isinstance(o, GuardReview)]
        assert len(winners) == 1 and Refused("already_resolved") in outcomes
        assert await file_reviews(store, effects) == 0  # redelivered: the resolution stays
        found = await store.get(rid)
        assert found is not None and found[0].status == "resolved"
        assert found[0].resolved_by == winners[0].resolved_by
        assert await store.items() == []
        assert [r.review_id for r in await store.items(include_resolved=True)] == [rid]
        assert await store.resolve("0123456789abcdef", "alice", "confirmed") == Refused("not_found")
    finally:
        await connection.close()


async def test_the_cli_lists_reviews_as_a_table_for_people(nats_url: str, guardrails: Guardrails) -> None:
    import asyncio

    import nats
    from nats.js.api import KeyValueConfig
    from typer.testing import CliRunner

    from services.dlp.reviews import ReviewStore, file_reviews
    from stellwerk.cli import app

    connection = await nats.connect(nats_url)
    try:
        kv = await connection.jetstream().create_key_value(KeyValueConfig(bucket="guard_reviews", history=5))
        await file_reviews(ReviewStore(kv), [Record([review_record(guardrails)])])
    finally:
        await connection.close()
    result = await asyncio.to_thread(CliRunner().invoke, app, ["guard", "reviews", "list", "--nats-url", nats_url],
                                     env={"COLUMNS": "250"})  # a wide terminal: ids are not folded
    assert result.exit_code == 0, result.output
    assert review_id("s1", "input") in result.output and "guard.review.topic.legal_advice" in result.output
    assert "neighbour" not in result.output
    unreachable = await asyncio.to_thread(CliRunner().invoke, app,
                                          ["guard", "reviews", "list", "--nats-url", "nats://127.0.0.1:9"])
    assert unreachable.exit_code == 3
