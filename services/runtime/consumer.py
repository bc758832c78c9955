"""A flow-controlled pull consumer: keeps up to ``capacity`` messages of a durable in this process.

Why not ``fetch()`` in a loop (nats-py) or FastStream's pull subscriber: both ask the server
once per batch and wait for the batch, so a message that arrives while a handler runs waits
for the next round trip, and a lightly loaded worker spends its CPU on pull requests and
timeouts. Here the process keeps standing pull requests open for exactly as many messages
as it has free slots (the ``consume`` pattern of the NATS Go and Java clients): the server
pushes each message the moment it is stored, and a slot freed by a finished handler is
re-offered in bulk once a quarter of the capacity is free.

Bookkeeping: ``requested`` counts messages asked for and not yet delivered. The server ends
a pull request with status 408 (expired) or 409 (e.g. max ack pending reached), naming in
``Nats-Pending-Messages`` how many of that request it will no longer deliver; idle
heartbeats (status 100) prove a request is still alive. After a reconnect or when heartbeats
stop, the open requests are presumed lost and asked for anew; a surplus delivery is harmless
(the message is simply handled; ``max_ack_pending`` bounds the consumer server-side).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

_STATUS = "Status"
_PENDING = "Nats-Pending-Messages"


class PullConsumer:
    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        capacity: int,
        deliver: Callable[[Msg], None],
        *,
        expires_s: float = 30.0,
        heartbeat_s: float = 5.0,
    ) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.capacity = max(1, capacity)
        self._deliver = deliver
        self._expires_ns = int(expires_s * 1e9)
        self._heartbeat_s = heartbeat_s
        self.in_flight = 0  # handed to ``deliver``, not yet released
        self.requested = 0  # asked for, not yet delivered nor given up by the server
        self._last_seen = time.monotonic()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._inbox = ""

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._receive)
        self._task = asyncio.create_task(self._keep_pulling(), name=f"pull-{self._next}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def release(self) -> None:
        """A handed-out message is done (acked, NAKed or dead-lettered): its slot is free."""
        self.in_flight -= 1
        if self.capacity - self.in_flight - self.requested >= self._refill_at():
            self._wake.set()

    def reset(self) -> None:
        """Forget open pull requests (after a reconnect the server no longer has them)."""
        self.requested = 0
        self._wake.set()

    def _refill_at(self) -> int:
        return max(1, self.capacity // 4)

    async def _receive(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers
        if not msg.data and headers and _STATUS in headers:
            status = headers[_STATUS]
            if status != "100":  # 408 expired, 409 limits, 404 none: that request is over
                pending = headers.get(_PENDING)
                self.requested = max(0, self.requested - int(pending)) if pending else 0
                self._wake.set()
            return
        self.requested = max(0, self.requested - 1)
        self.in_flight += 1
        self._deliver(msg)

    async def _keep_pulling(self) -> None:
        while True:
            free = self.capacity - self.in_flight - self.requested
            if free >= self._refill_at() or (free > 0 and self.requested == 0):
                await self._pull(free)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._heartbeat_s)
            except TimeoutError:
                if self.requested and time.monotonic() - self._last_seen > 3 * self._heartbeat_s:
                    self.requested = 0  # no heartbeat: the open requests are gone

    async def _pull(self, batch: int) -> None:
        if not self._nc.is_connected:
            return
        request = {"batch": batch, "expires": self._expires_ns, "idle_heartbeat": int(self._heartbeat_s * 1e9)}
        try:
            await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        except Exception:  # noqa: BLE001 - disconnected: asked again after the reconnect
            return
        self.requested += batch
        self._last_seen = time.monotonic()
