"""Live streaming to the caller (issue 12): screened deltas as they are released, as SSE.

The gateway subscribes to the request's screened deltas (``stellwerk.v1.delta.<id>``) and
its final result (``stellwerk.v1.result.<id>``) before it submits the request. It answers
with an HTTP error if the request ends before any text was released (a blocked prompt, no
route, …); otherwise it opens the SSE stream and forwards each delta as a
``chat.completion.chunk``. Deltas carry their offset in the screened answer: a repeated piece
is dropped, a gap ends the stream (``stream_interrupted``) — the caller never sees text out
of order. A stream whose screening worker goes silent (no delta or heartbeat for
``idle_timeout_s``) ends with a typed error event instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import RequestCancelled, RequestResult, RequestSubmitted, StreamDelta, encode
from schemas.vocabulary import ErrorCode
from services.gateway.openai_api import governance_summary, tool_call_delta
from services.runtime.errors import HTTP_STATUS, fixed_message

_delta = msgspec.json.Decoder(StreamDelta).decode
_result = msgspec.json.Decoder(RequestResult).decode


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["delta", "result"]
    delta: StreamDelta | None = None
    result: RequestResult | None = None


class LiveStream:
    """The bus side of one streamed request: deltas and the final result, in arrival order."""

    def __init__(self, nc: Client, request: RequestSubmitted, idle_timeout_s: float) -> None:
        self.nc = nc
        self.request = request
        self.idle_timeout_s = idle_timeout_s
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subs: list[Any] = []
        self.first_delta_seen = False
        # Wall-clock stamps (perf_counter) of the first text and each later piece: TTFT/ITL.
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None

    async def subscribe(self) -> None:
        async def on_delta(msg: Msg) -> None:
            # Not from a screening worker: ignored, the final result decides.
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                self.queue.put_nowait(Event("delta", delta=_delta(msg.data)))

        async def on_result(msg: Msg) -> None:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                self.queue.put_nowait(Event("result", result=_result(msg.data)))

        rid = self.request.request_id
        self._subs = [
            await self.nc.subscribe(subjects.delta(rid), cb=on_delta),
            await self.nc.subscribe(subjects.result(rid), cb=on_result, max_msgs=1),
        ]

    async def close(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):  # the connection may be gone: nothing to release
                await sub.unsubscribe()

    async def next(self) -> Event | None:
        """The next event; None when the deadline passed or the screening went silent."""
        remaining = self.request.remaining_s()
        timeout = min(remaining, self.idle_timeout_s) if self.first_delta_seen else remaining
        if timeout <= 0:
            return None
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if event.kind == "delta":
            self.first_delta_seen = True
        return event


def error_code_after_silence(stream: LiveStream) -> ErrorCode:
    return "deadline_exceeded" if stream.request.remaining_s() <= 0 else "stream_interrupted"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def error_payload(code: ErrorCode, request_id: str, rule_id: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": fixed_message(code),
        "type": "stellwerk_error",
        "param": None,
        "code": code,
        "status": HTTP_STATUS[code],
        "stellwerk": {"request_id": request_id},
    }
    if rule_id:
        error["stellwerk"]["rule_id"] = rule_id
    return {"error": error}


async def sse_events(
    stream: LiveStream,
    first: Event,
    include_usage: bool,
    observe_ttft: Any = None,
    observe_itl: Any = None,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: role chunk, content chunks as released, the finish chunk, usage, [DONE].

    A caller that goes away is noticed at the next event (at the latest the screening
    worker's next heartbeat, a second later): the request is cancelled on the bus
    (``stellwerk.v1.cancel.<id>``), which stops the model call, and the stream ends here."""
    completed = False
    rid = stream.request.request_id
    base: dict[str, Any] = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk",
                            "created": int(time.time()), "model": "stellwerk"}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    started = time.perf_counter()
    have = 0
    event: Event | None = first
    try:
        yield chunk({"role": "assistant", "content": ""})
        while event is not None:
            if event.kind == "delta" and event.delta is not None:
                delta = event.delta
                if delta.offset > have:  # a piece is missing: never show text out of order
                    yield chunk({}, "error")
                    yield _sse(error_payload("stream_interrupted", rid))
                    break
                text = delta.text[have - delta.offset :]
                if text:
                    now = time.perf_counter()
                    if stream.first_text_at is None:
                        stream.first_text_at = now
                        if observe_ttft is not None:
                            observe_ttft(now - started)
                    elif observe_itl is not None and stream.last_text_at is not None:
                        observe_itl(now - stream.last_text_at)
                    stream.last_text_at = now
                    have += len(text)
                    yield chunk({"content": text})
            elif event.result is not None:
                result = event.result
                if result.inference is not None:
                    base["model"] = result.inference.model
                if result.status == "ok" and result.error is None:
                    # The result carries the whole screened answer: deltas still in flight on
                    # their own subscription (NATS orders per subscription only) are sent from it.
                    rest = (result.content or "")[have:]
                    if rest:
                        have += len(rest)
                        yield chunk({"content": rest})
                    for index, call in enumerate(result.tool_calls or ()):
                        # Screened whole at the end of the answer (services/dlp/streaming.py).
                        yield chunk({"tool_calls": [tool_call_delta(index, call)]})
                    yield chunk({}, result.finish_reason or "stop", stellwerk=governance_summary(result))
                    if include_usage and result.usage is not None:
                        usage = result.usage
                        yield _sse({**base, "choices": [], "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total_tokens,
                        }})
                else:
                    assert result.error is not None
                    finish = "content_filter" if result.error.code in ("dlp_blocked_output", "guard_blocked_output") else "error"
                    yield chunk({}, finish, stellwerk=governance_summary(result))
                    yield _sse(error_payload(result.error.code, rid, result.error.rule_id))
                break
            if disconnected is not None and await disconnected():
                break
            event = await stream.next()
            if event is None:
                yield chunk({}, "error")
                yield _sse(error_payload(error_code_after_silence(stream), rid))
        # Ended on the bus (a result arrived): nothing to stop. Otherwise — the caller went
        # away, a gap, silence — the request is cancelled so the model call stops.
        completed = event is not None and event.kind == "result"
        yield b"data: [DONE]\n\n"
    finally:
        if not completed:
            with contextlib.suppress(Exception):
                await stream.nc.publish(subjects.cancel(rid), encode(RequestCancelled()))
        await stream.close()
