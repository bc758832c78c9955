"""Submitting a request into the mesh and waiting for its result (bus plumbing, no decisions).

The gateway and ``stellwerk.client`` (applications on the bus) both submit requests this
way: subscribe to ``stellwerk.v1.result.<request_id>`` *before* publishing, so a fast
pipeline can never answer into the void; publish with ``Nats-Msg-Id`` = request id, retried
through a stream leader election until the deadline; wait until the request's deadline.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError
from opentelemetry import trace

from schemas import subjects
from schemas.events import RequestResult, RequestSubmitted, decode, encode
from services.runtime.telemetry import inject_headers

_tracer = trace.get_tracer("stellwerk.requests")


class DeadlineExceeded(TimeoutError):
    """No result arrived before the request's deadline."""


class BusUnavailable(ConnectionError):
    """The connection to NATS is down (reconnecting): the request was not submitted. Nothing
    was published, so retrying it later — with the same request id or a new one — is safe."""


class RequestClient:
    """Submits requests on one NATS connection (which its owner opens and closes)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def submit(self, request: RequestSubmitted) -> RequestResult:
        """Publish a request and wait for its result until the request's deadline."""
        with _tracer.start_as_current_span(
            "stellwerk.request", attributes={"stellwerk.request_id": request.request_id}
        ):
            return await self._submit(request)

    async def _submit(self, request: RequestSubmitted) -> RequestResult:
        if not self.nc.is_connected:  # fail fast: never queue a request behind a reconnect
            raise BusUnavailable(request.request_id)
        sub = await self.nc.subscribe(subjects.result(request.request_id), max_msgs=1)
        try:
            await self._publish(request)
            remaining = request.remaining_s()
            if remaining <= 0:
                raise DeadlineExceeded(request.request_id)
            try:
                msg = await sub.next_msg(timeout=remaining)
            except (NatsTimeoutError, TimeoutError) as exc:
                raise DeadlineExceeded(request.request_id) from exc
        finally:
            await sub.unsubscribe()
        return decode(msg.data, RequestResult)

    async def publish_request(self, request: RequestSubmitted) -> None:
        """Publish without waiting for the result (a caller that reads a stream itself)."""
        await self._publish(request)

    async def _publish(self, request: RequestSubmitted) -> None:
        """Publish until the stream acknowledges or the deadline passes. A clustered stream has
        no responder for a moment while it elects a new leader; the message id makes a retry
        harmless (JetStream stores it once).

        While the connection is down, a request not yet sent fails at once (``BusUnavailable``);
        one whose publish may have reached the server before the connection broke is retried
        after the reconnect, until its deadline — the caller learns its fate either way."""
        payload = encode(request)
        headers = inject_headers({"Nats-Msg-Id": f"{request.request_id}:submitted"})
        if not self.nc.is_connected:
            raise BusUnavailable(request.request_id)
        while True:
            while not self.nc.is_connected:
                if request.remaining_s() <= 0.1:
                    raise DeadlineExceeded(request.request_id)
                await asyncio.sleep(0.05)
            try:
                await self.js.publish(
                    subjects.REQUEST_SUBMITTED,
                    payload,
                    headers=headers,
                    timeout=max(min(request.remaining_s(), 2.0), 0.1),
                )
                return
            except (NoStreamResponseError, NatsTimeoutError, TimeoutError) as exc:
                if request.remaining_s() <= 0.1:
                    raise DeadlineExceeded(request.request_id) from exc
                await asyncio.sleep(0.1)
