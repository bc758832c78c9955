"""Screening a streamed answer: read its chunks in order, release only screened text.

One output-DLP worker takes a ``response.streaming`` event and reads the request's raw
chunks from the CHUNKS stream with an ordered consumer. Each chunk goes through the sliding
window (``stream_window.StreamScreen``), and only what the window releases — text that can
no longer become part of a detection, redacted, pseudonyms restored — is published to the
caller on ``stellwerk.v1.delta.<request_id>``, each piece with its offset in the screened
answer. Fail closed at every step:

* a gap or reordering (``seq``), a digest that does not match, or no chunk for
  ``idle_timeout_s`` ends the stream with ``stream_interrupted``;
* a block decision ends it with ``dlp_blocked_output`` (the gateway turns that into
  ``finish_reason: "content_filter"``) — nothing after the decision is released; the rest of
  the model's stream is still read, so the call's records reach the audit trail;
* output moderation (issue 16) reads each release before it goes out: ``block`` ends the
  stream like DLP (``guard_blocked_output``); ``replace`` ends it with the policy's fixed
  answer after what was released and ``finish_reason: "content_filter"``; the strictest of
  ``allow``/``flag``/``review`` is the answer's guard record;
* a ``review`` verdict's work item (KV ``guard_reviews``, ``reviews.py``) is filed before
  the text it let through is released — see ``StreamScreening._file`` for why there and
  what a failure to file does;
* while it works, the worker sends an empty delta every ``heartbeat_s``: a gateway that
  stops hearing them ends the stream with a typed error instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Protocol, get_args

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError

from schemas import subjects
from schemas.events import (
    AuditEvent,
    DlpDecision,
    RequestResult,
    ResponseStreaming,
    StreamChunk,
    StreamDelta,
    ToolCall,
    encode,
    envelope_fields,
)
from schemas.kv import GuardReview
from schemas.streams import CHUNKS
from schemas.vocabulary import DlpAction
from services.dlp.guard import DlpUnavailable
from services.dlp.guardrails import GuardDecision, closing_audit, guard_audit, stricter
from services.dlp.handlers import StreamModeration, decision_audit, replace_stream
from services.dlp.reviews import review_from_audit
from services.runtime.effects import Effects, Fail, Record, Reply
from services.runtime.worker import Worker

_decode_chunk = msgspec.json.Decoder(StreamChunk).decode
ACTION_ORDER = get_args(DlpAction)  # allow < redact < block


class Release(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def blocked(self) -> bool: ...

    @property
    def decision(self) -> DlpDecision | None: ...


class Window(Protocol):
    def feed(self, text: str) -> Release: ...

    def finish(self) -> Release: ...


ScreenCalls = Callable[[ResponseStreaming, list[ToolCall]], tuple[list[ToolCall] | None, DlpDecision]]
# Output moderation (issue 16) of text the window is about to release, read with the tail of
# what was released before (``handlers.moderate_stream``).
Moderate = Callable[[ResponseStreaming, str], StreamModeration]
MODERATION_TAIL = 400
# Files a review's work item (``ReviewStore.file``: a create, False when it exists already).
FileReview = Callable[[GuardReview], Awaitable[bool]]
# Retries in place before a review counts as not filed: a KV leader change takes a moment,
# and in place is far cheaper than ending the caller's answer.
REVIEW_RETRY_S: tuple[float, ...] = (0.1, 0.4, 1.0)


class StreamScreening:
    def __init__(
        self,
        worker: Worker,
        window_for: Callable[[ResponseStreaming], Window],
        screen_calls: ScreenCalls,
        *,
        idle_timeout_s: float = 30.0,
        heartbeat_s: float = 1.0,
        moderate: Moderate | None = None,
        file_review: FileReview | None = None,
        on_unfiled: Callable[[GuardReview], None] | None = None,
        review_retry_s: tuple[float, ...] = REVIEW_RETRY_S,
    ) -> None:
        self.moderate = moderate
        self.file_review = file_review
        self.on_unfiled = on_unfiled
        self.review_retry_s = review_retry_s
        self.worker = worker
        self.window_for = window_for
        self.screen_calls = screen_calls
        self.idle_timeout_s = idle_timeout_s
        self.heartbeat_s = heartbeat_s

    async def __call__(self, event: ResponseStreaming) -> Effects:
        worker = self.worker
        window = self.window_for(event)
        out = subjects.delta(event.request_id)
        released: list[str] = []
        offset = [0]

        async def emit(text: str) -> None:
            if text:
                await worker.nc.publish(out, encode(StreamDelta(offset=offset[0], text=text)))
                released.append(text)
                offset[0] += len(text)

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.heartbeat_s)
                await worker.nc.publish(out, encode(StreamDelta(offset=offset[0])))

        heart = asyncio.create_task(beat())
        sub = await worker.js.subscribe(subjects.chunk(event.request_id), ordered_consumer=True)
        digest = hashlib.sha256()
        expected = 0
        decision: DlpDecision | None = None
        blocked_by: DlpDecision | None = None
        moderated = False  # ended by output moderation (the caller has its answer)
        guarded: GuardDecision | None = None  # the strictest moderation verdict that let text through
        filed: set[str] = set()  # review items filed by this delivery
        keep_chunks = False
        try:
            while True:
                timeout = max(0.1, min(self.idle_timeout_s, event.remaining_s()))
                try:
                    msg = await sub.next_msg(timeout=timeout)
                    chunk = _decode_chunk(msg.data)
                except (NatsTimeoutError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError):
                    return self._interrupted(event, blocked_by)
                if chunk.seq != expected:
                    return self._interrupted(event, blocked_by)
                expected += 1
                if chunk.final:
                    break
                digest.update(chunk.text.encode())
                if blocked_by is not None or moderated:
                    continue  # drained for the call's records; nothing more is released
                release = window.feed(chunk.text)
                decision = release.decision or decision
                if release.blocked:
                    blocked_by = decision
                    await worker.carry_out(event, self._blocked(event, decision, guarded))
                    continue
                check = self._moderated(event, released, release.text)
                stop = self._stop(event, check, released, decision)
                if stop is not None:
                    moderated = True
                    await worker.carry_out(event, stop)
                    continue
                unfiled = await self._file(event, check, filed)
                if unfiled is not None:
                    moderated = True
                    await worker.carry_out(event, unfiled)
                    continue
                guarded = stricter(guarded, check.verdict if check else None)
                await emit(release.text)
            if blocked_by is not None or moderated:  # the caller has its answer; record the call as well
                return [Record(chunk.trail)] if chunk.trail else []
            if chunk.failed is not None:
                return [Fail(chunk.failed, "inference", audits=chunk.trail,
                             result_fields={"routing": event.routing, "dlp_input": event.dlp_input})]
            if chunk.sha256 != digest.hexdigest():
                return self._interrupted(event, None)
            release = window.finish()
            decision = release.decision or decision
            if release.blocked:
                return self._blocked(event, decision, guarded)
            check = self._moderated(event, released, release.text)
            stop = self._stop(event, check, released, decision)
            if stop is not None:
                return [*stop, Record(chunk.trail)] if chunk.trail else stop
            unfiled = await self._file(event, check, filed)
            if unfiled is not None:
                return [*unfiled, Record(chunk.trail)] if chunk.trail else unfiled
            guarded = stricter(guarded, check.verdict if check else None)
            await emit(release.text)
            tool_calls, calls_decision = None, None
            if chunk.tool_calls:
                try:
                    tool_calls, calls_decision = self.screen_calls(event, chunk.tool_calls)
                except DlpUnavailable:
                    return [Fail("dlp_unavailable", "dlp_output", audits=chunk.trail,
                                 result_fields={"routing": event.routing, "dlp_input": event.dlp_input})]
                if tool_calls is None:
                    return self._blocked(event, calls_decision, guarded)
        except BaseException:
            # The handler fails and the message is redelivered: that delivery must read the
            # chunks again, or it ends as interrupted and the call's records (chunk.trail) and
            # the caller's result are lost. It re-screens the same text to the same decisions:
            # the gateway drops delta pieces it already has, a stored effect carried out again
            # is a duplicate (no second reply), a review item exists already. The chunks still
            # go at the stream's 10-minute age limit.
            keep_chunks = True
            raise
        finally:
            heart.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            # Raw text has no business outside the pipeline once screened: drop the chunks
            # now rather than at the stream's 10-minute age limit.
            if not keep_chunks:
                with contextlib.suppress(Exception):
                    await worker.js.purge_stream(CHUNKS.name, subject=subjects.chunk(event.request_id))
        assert decision is not None, "a finished window has decided"
        # The guard's record (the strictest verdict over the releases) before DLP's, as for a
        # whole answer: a flagged or reviewed stream is on the trail like any other.
        audits = [guard_audit(event, guarded)] if guarded is not None else []
        audits.append(decision_audit(event, "dlp_output", decision))
        if calls_decision is not None:  # the tool calls' own decision; the stricter one is the answer's
            audits.append(decision_audit(event, "dlp_output", calls_decision))
            decision = max(decision, calls_decision, key=lambda d: ACTION_ORDER.index(d.action))
        result = RequestResult(
            **envelope_fields(event),
            status="ok",
            content="".join(released),
            finish_reason=chunk.finish_reason,
            tool_calls=tool_calls,
            dlp_input=event.dlp_input,
            routing=event.routing,
            dlp_output=decision,
            inference=chunk.inference,
            usage=chunk.usage,
            cost=chunk.cost,
            currency=chunk.currency,
        )
        return [Record([*event.trail, *chunk.trail, *audits]), Reply(result)]

    async def _file(self, event: ResponseStreaming, check: StreamModeration | None,
                    filed: set[str]) -> Effects | None:
        """File the work item of a ``review`` verdict before the text it let through is
        released; None to release it, else the effects that end the stream instead.

        Why here (issue 16, review 1b): every review is filed while the stream runs, before
        its text reaches the caller and before anything is carried out or the chunks purged,
        so no effect carried out later — a block mid-stream, the final record and reply —
        holds a review that is not filed yet, and nothing is written after the purge. The
        item's key is the request's and direction's (``reviews.review_id``): the first review
        of a stream files it, later ones and a redelivery find it (exactly one item).

        A write that still fails after ``review_retry_s`` fails closed without losing
        anything: the reviewed text is not released, the stream ends ``guard_unavailable``
        (the caller has a typed error), the rest of the model's stream is still read so the
        call's records reach the trail, and the guard's ``review`` record is on the trail
        marked ``review_filed=false`` — the item can be rebuilt from it
        (``reviews.review_from_audit``); ``on_unfiled`` counts it for ops. Failing the
        handler instead would redeliver a stream whose text the caller partly has, and after
        ``max_deliver`` lose the call's records."""
        verdict = check.verdict if check is not None else None
        if self.file_review is None or verdict is None or verdict.action != "review":
            return None
        record = guard_audit(event, verdict)
        review = review_from_audit(record)
        if review is None or review.review_id in filed:
            return None
        for delay in (0.0, *self.review_retry_s):
            if delay:
                await asyncio.sleep(delay)
            try:
                await self.file_review(review)  # False: a redelivery filed it already
            except Exception as exc:  # noqa: BLE001 - any store failure is retried, then fails closed
                self.worker.log.warning("guard_review_not_filed", request_id=event.request_id,
                                        rule_id=review.rule_id, error=type(exc).__name__)
                continue
            filed.add(review.review_id)
            return None
        self.worker.log.error("guard_review_unfiled", request_id=event.request_id, rule_id=review.rule_id)
        if self.on_unfiled is not None:
            self.on_unfiled(review)
        return [Fail("guard_unavailable", "dlp_output", result_fields={"routing": event.routing,
                                                                       "dlp_input": event.dlp_input},
                     audits=[_unfiled(record), closing_audit(event, "dlp_output", None, "guard_unavailable")])]

    def _moderated(self, event: ResponseStreaming, released: list[str], text: str) -> StreamModeration | None:
        if self.moderate is None or not text:
            return None
        tail: list[str] = []
        size = 0
        for piece in reversed(released):
            tail.append(piece)
            size += len(piece)
            if size >= MODERATION_TAIL:
                break
        return self.moderate(event, "".join(reversed(tail))[-MODERATION_TAIL:] + text)

    @staticmethod
    def _stop(event: ResponseStreaming, check: StreamModeration | None, released: list[str],
              decision: DlpDecision | None) -> Effects | None:
        """The effects that end the stream after this moderation, or None to release the text."""
        if check is None:
            return None
        if check.stop is not None:
            return check.stop
        if check.verdict is not None and check.verdict.action == "replace":
            return replace_stream(event, check.verdict, "".join(released), decision)
        return None

    def _blocked(self, event: ResponseStreaming, decision: DlpDecision | None,
                 guarded: GuardDecision | None = None) -> Effects:
        audits = [guard_audit(event, guarded)] if guarded is not None else []
        if decision is not None:
            audits.append(decision_audit(event, "dlp_output", decision))
        return [
            Fail(
                "dlp_blocked_output",
                "dlp_output",
                status="blocked",
                rule_id=decision.rule_id if decision else None,
                audits=audits,
                result_fields={
                    "dlp_input": event.dlp_input,
                    "routing": event.routing,
                    "dlp_output": decision,
                    "finish_reason": "content_filter",
                },
            )
        ]

    def _interrupted(self, event: ResponseStreaming, blocked_by: DlpDecision | None) -> Effects:
        if blocked_by is not None:
            return []  # already ended (blocked) for the caller and recorded
        return [Fail("stream_interrupted", "dlp_output", result_fields={"routing": event.routing})]


def _unfiled(record: AuditEvent) -> AuditEvent:
    return msgspec.structs.replace(record, attributes={**record.attributes, "review_filed": "false"})
