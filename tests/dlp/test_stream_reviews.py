"""Guard reviews of streamed answers (issue 16, review 1b), on a real nats-server: the stream
handler reads real chunks from JetStream; the window, the moderation and the review store are
stand-ins so each case is exact.

* a ``review`` verdict is filed before its text is released — also when the stream later
  ends by a block (the block's effects are carried out mid-stream) — and exactly once, also
  across a redelivery;
* a store that keeps failing never loses the request: the reviewed text is not released, the
  caller gets ``guard_unavailable``, the call's records and the guard's review record
  (``review_filed=false``) reach the trail, the chunks are purged;
* a handler that fails keeps the chunks, so its redelivery ends the request normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType

from schemas import subjects
from schemas.events import (
    AuditEvent,
    DlpDecision,
    ResponseStreaming,
    RoutingDecision,
    StreamChunk,
    StreamDelta,
    deadline_in,
    encode,
    envelope_fields,
)
from schemas.kv import GuardReview
from schemas.streams import CHUNKS
from services.dlp.guardrails import GuardDecision
from services.dlp.handlers import StreamModeration
from services.dlp.reviews import review_id
from services.dlp.streaming import StreamScreening
from services.runtime.effects import Effects, Fail, Record, Reply

ALLOW = DlpDecision(direction="output", action="allow", rule_id="dlp.allow", policy_version="sha256:0123456789abcdef",
                    language="en", derived_sensitivity="internal", has_pii=False, has_medical_terms=False,
                    medical_term_density=0.0)
BLOCK = msgspec.structs.replace(ALLOW, action="block", rule_id="dlp.block.secret")
REVIEW = GuardDecision(direction="output", action="review", rule_id="guard.review.topic.legal_advice",
                       policy_version="sha256:0123456789abcdef", categories=[])


@dataclass
class Release:
    text: str
    blocked: bool = False
    decision: DlpDecision | None = None


class Window:
    """DLP stand-in: releases each chunk whole; a chunk with SECRET is blocked."""

    def feed(self, text: str) -> Release:
        if "SECRET" in text:
            return Release("", blocked=True, decision=BLOCK)
        return Release(text, decision=ALLOW)

    def finish(self) -> Release:
        return Release("", decision=ALLOW)


def moderate(_: ResponseStreaming, text: str) -> StreamModeration:
    """Guard stand-in: text (with the tail of what was released) naming a lawyer is a review."""
    return StreamModeration(REVIEW if "lawyer" in text else None, None)


@dataclass
class Store:
    """In-memory stand-in for ReviewStore.file: a create keyed by the review id."""

    fail_times: int = 0  # the first n writes raise (KV unavailable)
    items: dict[str, GuardReview] = field(default_factory=dict)
    writes: int = 0

    async def file(self, review: GuardReview) -> bool:
        self.writes += 1
        if self.fail_times > 0:
            self.fail_times -= 1
            raise nats.errors.TimeoutError
        if review.review_id in self.items:
            return False
        self.items[review.review_id] = review
        return True


@dataclass
class Worker:
    """The engine's parts the handler uses: real NATS; effects carried out are recorded."""

    nc: Client
    js: JetStreamContext
    carried: list[Effects] = field(default_factory=list)
    fail_carry_outs: int = 0
    log: Any = field(default_factory=structlog.get_logger)

    async def carry_out(self, _: object, effects: Effects) -> None:
        if self.fail_carry_outs > 0:
            self.fail_carry_outs -= 1
            raise nats.errors.TimeoutError
        self.carried.append(effects)


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=CHUNKS.name, subjects=list(CHUNKS.subjects), storage=StorageType.MEMORY)
    yield nc, js
    await nc.close()


def streaming(rid: str) -> ResponseStreaming:
    return ResponseStreaming(request_id=rid, correlation_id="c1", tenant="acme", business_unit="claims",
                             user_role="analyst", usecase_class="chat", deadline=deadline_in(30), messages=[],
                             dlp_input=msgspec.structs.replace(ALLOW, direction="input"),
                             routing=RoutingDecision(route="local-vllm", rule_id="r", policy_version="p"))


def inference_record(event: ResponseStreaming) -> AuditEvent:
    return AuditEvent(**envelope_fields(event), stage="inference", outcome="ok")


async def publish_chunks(js: JetStreamContext, event: ResponseStreaming, texts: list[str]) -> None:
    import hashlib

    for seq, text in enumerate(texts):
        await js.publish(subjects.chunk(event.request_id), encode(StreamChunk(seq=seq, text=text)))
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()
    await js.publish(subjects.chunk(event.request_id), encode(StreamChunk(
        seq=len(texts), final=True, finish_reason="stop", sha256=digest, trail=[inference_record(event)])))


async def chunks_left(js: JetStreamContext, event: ResponseStreaming) -> int:
    info = await js.stream_info(CHUNKS.name, subjects_filter=subjects.chunk(event.request_id))
    return sum((info.state.subjects or {}).values())


def screening(worker: Worker, store: Store, unfiled: list[GuardReview] | None = None) -> StreamScreening:
    return StreamScreening(worker, lambda _: Window(), lambda _, calls: (calls, ALLOW),  # type: ignore[arg-type]
                           heartbeat_s=60.0, idle_timeout_s=5.0, moderate=moderate, file_review=store.file,
                           on_unfiled=(unfiled.append if unfiled is not None else None),
                           review_retry_s=(0.0, 0.0))


def audits_of(effects: Effects) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for effect in effects:
        out += effect.events if isinstance(effect, Record) else effect.audits if isinstance(effect, Fail) else []
    return out


def stages(effects: Effects) -> list[tuple[str, str]]:
    return [(a.stage, a.outcome) for a in audits_of(effects)]


async def deltas(nc: Client, event: ResponseStreaming) -> tuple[list[str], Any]:
    got: list[str] = []

    async def take(msg: Any) -> None:
        delta = msgspec.json.decode(msg.data, type=StreamDelta)
        if delta.text:
            got.append(delta.text)

    return got, await nc.subscribe(subjects.delta(event.request_id), cb=take)


async def test_a_review_then_a_block_files_the_review_once_before_its_text_is_released(
    bus: tuple[Client, JetStreamContext],
) -> None:
    nc, js = bus
    worker, store = Worker(nc, js), Store()
    event = streaming("r1")
    await publish_chunks(js, event, ["Ask a |", "lawyer about it |", "and a second lawyer |", "the SECRET |", "x"])
    got, sub = await deltas(nc, event)
    final = await screening(worker, store)(event)
    await nc.flush()
    await asyncio.sleep(0.05)
    await sub.unsubscribe()
    # Filed once (the second review of the stream is the same item), though the stream ended
    # by a DLP block carried out mid-stream — before, nothing after the handler filed it.
    assert list(store.items) == [review_id("r1", "output")] and store.writes == 1
    assert store.items[review_id("r1", "output")].rule_id == REVIEW.rule_id
    [blocked] = worker.carried
    assert isinstance(blocked[0], Fail) and blocked[0].code == "dlp_blocked_output"
    assert [a.outcome for a in audits_of(blocked) if a.stage == "guard"] == ["review"]
    assert "".join(got) == "Ask a |lawyer about it |and a second lawyer |"  # nothing after the block
    assert stages(final) == [("inference", "ok")] and len(final) == 1  # the call's records reach the trail
    assert await chunks_left(js, event) == 0


async def test_a_redelivered_stream_does_not_file_twice(bus: tuple[Client, JetStreamContext]) -> None:
    """The first delivery fails after the review was filed (carrying out the block): the chunks
    stay for the redelivery, which ends the request and finds the item already filed."""
    nc, js = bus
    worker, store = Worker(nc, js, fail_carry_outs=1), Store()
    event = streaming("r2")
    await publish_chunks(js, event, ["a lawyer |", "the SECRET |"])
    with pytest.raises(nats.errors.TimeoutError):
        await screening(worker, store)(event)
    assert await chunks_left(js, event) == 3  # kept: the redelivery reads them again
    final = await screening(worker, store)(event)
    assert len(store.items) == 1 and store.writes == 2  # the second write found the item
    [blocked] = worker.carried
    assert isinstance(blocked[0], Fail) and blocked[0].code == "dlp_blocked_output"
    assert stages(final) == [("inference", "ok")] and len(final) == 1
    assert await chunks_left(js, event) == 0


async def test_a_passing_store_failure_is_retried_in_place(bus: tuple[Client, JetStreamContext]) -> None:
    nc, js = bus
    worker, store = Worker(nc, js), Store(fail_times=2)
    event = streaming("r3")
    await publish_chunks(js, event, ["Ask a |", "lawyer |"])
    final = await screening(worker, store)(event)
    assert list(store.items) == [review_id("r3", "output")] and store.writes == 3
    record, reply = final
    assert isinstance(record, Record) and isinstance(reply, Reply)
    assert reply.result.status == "ok" and reply.result.content == "Ask a |lawyer |"
    assert ("inference", "ok") in stages([record])
    assert [a.outcome for a in record.events if a.stage == "guard"] == ["review"]


@pytest.mark.parametrize("where", ["mid_stream", "last_release"])
async def test_a_review_that_cannot_be_filed_fails_closed_and_loses_nothing(
    bus: tuple[Client, JetStreamContext], where: str,
) -> None:
    nc, js = bus
    worker, store, unfiled = Worker(nc, js), Store(fail_times=100), list[GuardReview]()
    event = streaming("r4" if where == "mid_stream" else "r5")
    texts = ["Ask a |", "lawyer |", "more |"] if where == "mid_stream" else ["Ask a |", "lawyer |"]
    await publish_chunks(js, event, texts)
    if where == "last_release":  # the window holds the last piece back until finish
        window = Window()
        held: list[str] = []

        class Holding:
            def feed(self, text: str) -> Release:
                if "lawyer" in text:
                    held.append(text)
                    return Release("", decision=ALLOW)
                return window.feed(text)

            def finish(self) -> Release:
                return Release("".join(held), decision=ALLOW)

        handler = screening(worker, store, unfiled)
        handler.window_for = lambda _: Holding()
    else:
        handler = screening(worker, store, unfiled)
    got, sub = await deltas(nc, event)
    final = await handler(event)
    await nc.flush()
    await asyncio.sleep(0.05)
    await sub.unsubscribe()
    assert store.items == {} and store.writes == 3  # tried, then retried twice
    assert [r.review_id for r in unfiled] == [review_id(event.request_id, "output")]
    assert "".join(got) == "Ask a |"  # the reviewed text never reached the caller
    ended = worker.carried[0] if where == "mid_stream" else final
    assert isinstance(ended[0], Fail) and ended[0].code == "guard_unavailable"
    [guard] = [a for a in audits_of(ended) if a.stage == "guard"]
    assert (guard.outcome, guard.attributes["review_filed"]) == ("review", "false")
    assert [a.reason_code for a in audits_of(ended) if a.stage == "dlp_output"] == ["guard_unavailable"]
    # The call's own records still reach the trail, and nothing is left behind.
    assert final[-1] == Record(final[-1].events) and stages([final[-1]]) == [("inference", "ok")]  # type: ignore[union-attr]
    assert await chunks_left(js, event) == 0
