"""Async client for applications that talk to the mesh directly instead of over HTTP.

    async with await StellwerkClient.connect("nats://127.0.0.1:4222") as client:
        result = await client.chat(
            [ChatMessage(role="user", content="Hello")],
            tenant="acme-insurance", business_unit="claims", user_role="analyst",
        )
        print(result.status, result.content)

The client subscribes to ``stellwerk.v1.result.<request_id>`` *before* it publishes the
request, so a fast pipeline can never answer into the void.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError
from opentelemetry import trace

from schemas import subjects
from schemas.events import (
    ChatMessage,
    GenerationParams,
    RequestAttributes,
    RequestResult,
    RequestSubmitted,
    deadline_in,
    decode,
    encode,
    new_id,
)
from schemas.vocabulary import UsecaseClass
from services.runtime.bus import connect
from services.runtime.telemetry import inject_headers

_tracer = trace.get_tracer("stellwerk.client")


class DeadlineExceeded(TimeoutError):
    """No result arrived before the request's deadline."""


class StellwerkClient:
    def __init__(self, nc: Client, *, owns_connection: bool = False) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self._owns = owns_connection

    @classmethod
    async def connect(cls, url: str, name: str = "stellwerk-client") -> Self:
        # The runtime's connect: credentials, TLS and the user's inbox prefix come from the
        # same STELLWERK_NATS_* settings every service uses.
        nc = await connect(url, name, persistent=False)
        return cls(nc, owns_connection=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns:
            await self.nc.drain()

    async def submit(self, request: RequestSubmitted) -> RequestResult:
        """Publish a request and wait for its result until the request's deadline."""
        with _tracer.start_as_current_span(
            "stellwerk.request", attributes={"stellwerk.request_id": request.request_id}
        ):
            return await self._submit(request)

    async def _submit(self, request: RequestSubmitted) -> RequestResult:
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
        harmless (JetStream stores it once)."""
        payload = encode(request)
        headers = inject_headers({"Nats-Msg-Id": f"{request.request_id}:submitted"})
        while True:
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

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        tenant: str,
        business_unit: str,
        user_role: str,
        usecase_class: UsecaseClass = "chat",
        attributes: RequestAttributes | None = None,
        params: GenerationParams | None = None,
        timeout_s: float = 60.0,
        pseudonymize: bool = False,
    ) -> RequestResult:
        request_id = new_id()
        return await self.submit(
            RequestSubmitted(
                request_id=request_id,
                correlation_id=request_id,
                deadline=deadline_in(timeout_s),
                tenant=tenant,
                business_unit=business_unit,
                user_role=user_role,
                usecase_class=usecase_class,
                messages=messages,
                attributes=attributes or RequestAttributes(),
                params=params or GenerationParams(),
                pseudonymize=pseudonymize,
            )
        )
