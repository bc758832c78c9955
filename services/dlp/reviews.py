"""Guard reviews (issue 16): a guard decision ``review`` lets the request through and puts a
work item in KV ``guard_reviews`` for a human — listed and resolved with ``stellwerk guard
reviews`` and on the console's page "Guard reviews".

An item is made from the guard's own audit record (``guardrails.guard_audit``), so it holds
what the trail holds and nothing more: ids, rule, policy version, scores, signal names —
never the text. The DLP worker files the items of a request's effects before the engine
carries them out (``file_reviews``), so an item exists before the caller has the answer; a
failure to store it fails the handler (the message is redelivered), never silently. A streamed
answer files each review itself before the reviewed text is released
(``streaming.StreamScreening._file``): a stream cannot be redelivered once the caller has part
of it, so there a failure (after retries) ends the stream fail closed with the trail kept.

Resolving is a compare-and-set on the item's revision (of two operators resolving at once,
one wins) and writes an ``approval`` audit record on the request's trail — who resolved it,
how — so the request's story shows the human's look.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from schemas.events import AuditEvent, utcnow
from schemas.kv import GuardReview, GuardReviewResolution, GuardScore
from services.runtime.effects import Effects, Fail, Record

PREFIX: Final = "review."
CAS_ATTEMPTS: Final = 16
_decode = msgspec.json.Decoder(GuardReview).decode


def review_id(request_id: str, direction: str) -> str:
    """Short, KV-key-safe and stable: a redelivered request files the same item once."""
    return hashlib.sha256(f"{request_id}\x00{direction}".encode()).hexdigest()[:16]


def review_from_audit(event: AuditEvent) -> GuardReview | None:
    """The work item for a guard record with outcome ``review``; None for any other record."""
    if event.stage != "guard" or event.outcome != "review" or not event.rule_id or not event.policy_version:
        return None
    direction = event.attributes.get("direction", "input")
    categories = []
    for key, value in event.attributes.items():
        if key.startswith("score."):
            try:
                categories.append(GuardScore(name=key.removeprefix("score."), score=float(value)))
            except ValueError:
                continue
    signals = [s for s in event.attributes.get("signals", "").split("+") if s]
    return GuardReview(
        review_id=review_id(event.request_id, direction),
        request_id=event.request_id,
        correlation_id=event.correlation_id,
        tenant=event.tenant,
        business_unit=event.business_unit,
        user_role=event.user_role,
        usecase_class=event.usecase_class,
        end_user=event.end_user,
        direction="output" if direction == "output" else "input",
        rule_id=event.rule_id,
        policy_version=event.policy_version,
        categories=sorted(categories, key=lambda c: -c.score),
        signals=signals,
        created_at=event.occurred_at,
    )


def reviews_in(effects: Effects) -> list[GuardReview]:
    """The review items among the audit records a handler's effects will write."""
    found: list[GuardReview] = []
    for effect in effects:
        events = effect.events if isinstance(effect, Record) else effect.audits if isinstance(effect, Fail) else []
        for event in events:
            review = review_from_audit(event)
            if review is not None:
                found.append(review)
    return found


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Literal["not_found", "already_resolved", "contended"]


def resolve(review: GuardReview, actor: str, resolution: GuardReviewResolution,
            now: datetime | None = None) -> GuardReview | Refused:
    if review.status == "resolved":
        return Refused("already_resolved")
    return msgspec.structs.replace(review, status="resolved", resolution=resolution, resolved_by=actor,
                                   resolved_at=now or utcnow())


def resolution_audit(review: GuardReview) -> AuditEvent:
    """The human's look on the request's trail (stage ``approval``, like a tool approval)."""
    assert review.resolution is not None and review.resolved_by is not None
    return AuditEvent(
        request_id=review.request_id,
        correlation_id=review.correlation_id,
        deadline=utcnow() + timedelta(minutes=1),
        tenant=review.tenant,
        business_unit=review.business_unit,
        user_role=review.user_role,
        usecase_class=review.usecase_class,
        end_user=review.end_user,
        stage="approval",
        outcome=f"review_{review.resolution}",
        rule_id=review.rule_id,
        policy_version=review.policy_version,
        attributes={"kind": "guard_review", "review_id": review.review_id, "direction": review.direction,
                    "actor": review.resolved_by},
    )


class ReviewStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def file(self, review: GuardReview) -> bool:
        """Store a new item; False when it exists (a redelivery: keep what a human may have done)."""
        try:
            await self.kv.create(PREFIX + review.review_id, msgspec.json.encode(review))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def get(self, rid: str) -> tuple[GuardReview, int] | None:
        try:
            entry = await self.kv.get(PREFIX + rid)
        except KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:
            return None
        return _decode(entry.value), entry.revision

    async def items(self, *, include_resolved: bool = False) -> list[GuardReview]:
        """Open items (or all), oldest first."""
        try:
            # nats-py's key filters are substring matches, not subject patterns: filter here.
            keys = [key for key in await self.kv.keys() if key.startswith(PREFIX)]
        except NoKeysError:
            return []
        out: list[GuardReview] = []
        for key in keys:
            found = await self.get(key.removeprefix(PREFIX))
            if found is not None and (include_resolved or found[0].status == "open"):
                out.append(found[0])
        out.sort(key=lambda r: r.created_at)
        return out

    async def resolve(self, rid: str, actor: str, resolution: GuardReviewResolution) -> GuardReview | Refused:
        for _ in range(CAS_ATTEMPTS):
            found = await self.get(rid)
            if found is None:
                return Refused("not_found")
            review, revision = found
            outcome = resolve(review, actor, resolution)
            if isinstance(outcome, Refused):
                return outcome
            try:
                await self.kv.update(PREFIX + rid, msgspec.json.encode(outcome), last=revision)
            except KeyWrongLastSequenceError:
                continue  # someone else wrote in between: decide again on what they wrote
            return outcome
        return Refused("contended")


async def file_reviews(store: ReviewStore, effects: Effects) -> int:
    """File the review items of ``effects`` (before the engine carries them out)."""
    filed = 0
    for review in reviews_in(effects):
        filed += await store.file(review)
    return filed
