"""The final reply of a request: once per caller, and not lost in a failover (worker engine).

A request's ending is stored (its trail, under a message id of its own) before the reply goes
out on core NATS. If the connection dies between the two — a server failover — the message
comes back, the trail is a duplicate, and the caller is still waiting: the reply must go out
then. If the reply did reach the server, a second delivery must not send it again. Real NATS
server, the engine's own ``carry_out``.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import (
    AuditEvent,
    ChatMessage,
    RequestResult,
    RequestSubmitted,
    deadline_in,
    decode,
    envelope_fields,
    new_id,
)
from services.runtime.bus import connect, ensure_topology
from services.runtime.effects import Record, Reply
from services.runtime.worker import Worker


def _request() -> RequestSubmitted:
    request_id = new_id()
    return RequestSubmitted(
        request_id=request_id, correlation_id=request_id, deadline=deadline_in(30), tenant="acme-insurance",
        business_unit="claims", user_role="analyst", usecase_class="chat",
        messages=[ChatMessage(role="user", content="hello")],
    )


def _ending(event: RequestSubmitted) -> list[Record | Reply]:
    audit = AuditEvent(**envelope_fields(event), stage="dlp_output", outcome="allow")
    return [Record([audit]), Reply(RequestResult(**envelope_fields(event), status="ok", content="answer"))]


async def _worker(nats_url: str) -> Worker:
    worker = Worker("dlp")
    worker._nc = await connect(nats_url, "test-worker", persistent=False)
    worker._js = worker._nc.jetstream()
    return worker


async def test_a_confirmed_reply_is_not_repeated_and_a_lost_one_is_sent_again(nats_url: str) -> None:
    caller = await connect(nats_url, "caller", persistent=False)
    await ensure_topology(caller.jetstream())
    event = _request()
    received: list[Msg] = []

    async def on_result(msg: Msg) -> None:
        received.append(msg)

    await caller.subscribe(subjects.result(event.request_id), cb=on_result)
    await caller.flush()

    first = await _worker(nats_url)
    await first.carry_out(event, _ending(event))  # trail stored, reply confirmed
    await first.carry_out(event, _ending(event))  # delivered again: ended before, replied before
    # Another process (or this one after its connection died) meets the stored trail without
    # having seen its reply confirmed: the caller may still wait, so it replies.
    second = await _worker(nats_url)
    await second.carry_out(event, _ending(event))
    await caller.flush()
    await asyncio.sleep(0.2)
    assert len(received) == 2  # the first delivery's and the unconfirmed one's; never the repeat
    assert all(decode(msg.data, RequestResult).request_id == event.request_id for msg in received)
    for worker in (first, second):
        await worker.nc.close()
    await caller.close()
