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
* while it works, the worker sends an empty delta every ``heartbeat_s``: a gateway that
  stops hearing them ends the stream with a typed error instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from typing import Protocol, get_args

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError

from schemas import subjects
from schemas.events import (
    DlpDecision,
    RequestResult,
    ResponseStreaming,
    StreamChunk,
    StreamDelta,
    ToolCall,
    encode,
    envelope_fields,
)
from schemas.streams import CHUNKS
from schemas.vocabulary import DlpAction
from services.dlp.guard import DlpUnavailable
from services.dlp.guardrails import GuardDecision, guard_audit, stricter
from services.dlp.handlers import StreamModeration, decision_audit, replace_stream
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
    ) -> None:
        self.moderate = moderate
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
        finally:
            heart.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            # Raw text has no business outside the pipeline once screened: drop the chunks
            # now rather than at the stream's 10-minute age limit.
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
