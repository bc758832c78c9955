"""The tool gateway's client side: one awaited request-reply per tool call, list or decision.

The gateway's own CLI and applications (``stellwerk.tools_client`` re-exports this module)
use it; it speaks only the bus contract (``schemas``), never the gateway's internals.

    async with await ToolsClient.connect(
        "nats://127.0.0.1:4222", tenant="acme-insurance", business_unit="claims",
        user_role="analyst", agent_id="claims-assistant",
    ) as tools:
        result = await tools.call("search.web_search", {"query": "Kfz-Versicherung Tarife"})
        if result.status == "ok":
            print(result.structured)
        else:
            print(result.error.code, result.error.rule_id, result.error.retry_after_s)

A critical tool's call waits until a human decides (``stellwerk approvals ...``) or the
approval times out; pass a ``timeout_s`` that allows for that. Refusals and failures are
results, not exceptions: only an unreachable gateway (``ToolGatewayUnavailable``) or no answer
before the deadline (``ToolCallTimeout``) raise.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from schemas import subjects
from schemas.events import (
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ToolCallRequested,
    ToolCallResult,
    ToolCatalog,
    ToolListRequested,
    deadline_in,
    decode,
    encode,
    new_id,
)
from schemas.vocabulary import UsecaseClass
from services.runtime.bus import connect
from services.runtime.telemetry import inject_headers


class ToolGatewayUnavailable(ConnectionError):
    """No tool gateway worker is listening."""


class ToolCallTimeout(TimeoutError):
    """No answer before the call's deadline."""


def split_tool(name: str, server: str | None = None) -> tuple[str, str]:
    """``"search.web_search"`` → ``("search", "web_search")``; or the tool with ``server``."""
    if server is not None:
        return server, name
    head, dot, tail = name.partition(".")
    if not dot or not head or not tail:
        raise ValueError(f"name the tool as <server>.<tool>, e.g. search.web_search (got {name!r})")
    return head, tail


async def _request(nc: Client, subject: str, payload: bytes, timeout_s: float) -> bytes:
    try:
        msg = await nc.request(subject, payload, timeout=max(timeout_s, 0.01), headers=inject_headers({}))
    except NoRespondersError as exc:
        raise ToolGatewayUnavailable("no tool gateway is running") from exc
    except (NatsTimeoutError, TimeoutError) as exc:
        raise ToolCallTimeout(subject) from exc
    return msg.data


async def request_call(nc: Client, call: ToolCallRequested) -> ToolCallResult:
    """Send a prepared ``ToolCallRequested``; wait until its deadline for the result."""
    return decode(await _request(nc, subjects.TOOL_CALL_REQUESTED, encode(call), call.remaining_s()), ToolCallResult)


async def list_tools(nc: Client, request: ToolListRequested, timeout_s: float = 10.0) -> ToolCatalog:
    return decode(await _request(nc, subjects.TOOL_LIST, encode(request), timeout_s), ToolCatalog)


async def decide_approval(
    nc: Client, request: ApprovalDecisionRequested, timeout_s: float = 10.0
) -> ApprovalDecisionReply:
    return decode(await _request(nc, subjects.TOOL_APPROVAL_DECIDE, encode(request), timeout_s), ApprovalDecisionReply)


class ToolsClient:
    """An agent's identity plus a NATS connection: ``await client.call(tool, arguments)``."""

    def __init__(
        self,
        nc: Client,
        *,
        tenant: str,
        business_unit: str,
        user_role: str,
        agent_id: str,
        usecase_class: UsecaseClass = "chat",
        user_id: str | None = None,
        application: str | None = None,
        owns_connection: bool = False,
    ) -> None:
        self.nc = nc
        self.tenant = tenant
        self.business_unit = business_unit
        self.user_role = user_role
        self.agent_id = agent_id
        self.usecase_class: UsecaseClass = usecase_class
        self.user_id = user_id
        self.application = application
        self._owns = owns_connection

    @classmethod
    async def connect(cls, url: str, **identity: Any) -> Self:
        # The runtime's connect: NATS user, TLS and inbox prefix from STELLWERK_NATS_* (an
        # agent's user may only receive on its own inbox prefix).
        nc = await connect(url, "stellwerk-tools-client")
        return cls(nc, owns_connection=True, **identity)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owns:
            await self.nc.drain()

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        server: str | None = None,
        timeout_s: float = 60.0,
        request_id: str | None = None,
        correlation_id: str | None = None,
    ) -> ToolCallResult:
        """Call ``server.tool`` (or ``tool`` on ``server``). ``request_id`` ties the call to
        the model request it serves; several calls may share one."""
        server_name, tool_name = split_tool(tool, server)
        request_id = request_id or new_id()
        return await request_call(
            self.nc,
            ToolCallRequested(
                request_id=request_id,
                correlation_id=correlation_id or request_id,
                deadline=deadline_in(timeout_s),
                tenant=self.tenant,
                business_unit=self.business_unit,
                user_role=self.user_role,
                usecase_class=self.usecase_class,
                tool=tool_name,
                server=server_name,
                arguments=arguments or {},
                agent_id=self.agent_id,
                user_id=self.user_id,
                application=self.application,
            ),
        )

    async def tools(self) -> ToolCatalog:
        """The tools there are, and which of them this client's role may call."""
        return await list_tools(
            self.nc,
            ToolListRequested(
                role=self.user_role, tenant=self.tenant, business_unit=self.business_unit,
                usecase_class=self.usecase_class,
            ),
        )
