"""Async client for applications that talk to the mesh directly instead of over HTTP.

    async with await StellwerkClient.connect("nats://127.0.0.1:4222") as client:
        result = await client.chat(
            [ChatMessage(role="user", content="Hello")],
            tenant="acme-insurance", business_unit="claims", user_role="analyst",
        )
        print(result.status, result.content)

The client subscribes to ``stellwerk.v1.result.<request_id>`` *before* it publishes the
request, so a fast pipeline can never answer into the void. While the connection to NATS is
down (it reconnects by itself), ``submit``/``chat`` raise ``BusUnavailable`` at once instead
of waiting; a request already published waits for its result until its deadline
(``DeadlineExceeded``). The bus logic is the runtime's
(``services.runtime.requests.RequestClient``), shared with the HTTP gateway.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from nats.aio.client import Client

from schemas.events import (
    ChatMessage,
    GenerationParams,
    RequestAttributes,
    RequestResult,
    RequestSubmitted,
    deadline_in,
    new_id,
)
from schemas.vocabulary import UsecaseClass
from services.runtime.bus import connect, reconnect_options
from services.runtime.requests import BusUnavailable, DeadlineExceeded, RequestClient

__all__ = ["BusUnavailable", "DeadlineExceeded", "StellwerkClient"]


class StellwerkClient(RequestClient):
    """``RequestClient`` (``services.runtime.requests``: submit, publish_request) plus a
    connection of its own and a ``chat`` shortcut."""

    def __init__(self, nc: Client, *, owns_connection: bool = False) -> None:
        super().__init__(nc)
        self._owns = owns_connection

    @classmethod
    async def connect(cls, url: str, name: str = "stellwerk-client") -> Self:
        # The runtime's connect: credentials, TLS and the user's inbox prefix come from the
        # same STELLWERK_NATS_* settings every service uses.
        nc = await connect(url, name, persistent=False)  # an unreachable bus fails the connect at once
        # Once connected, ride out a lost server like every service does (issue 19): reconnect
        # forever; meanwhile ``submit`` fails fast with ``BusUnavailable``.
        nc.options.update(reconnect_options())
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
