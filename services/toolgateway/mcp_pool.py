"""Connections to the MCP servers of the tool zone, and the tools they offer.

One long-lived ``mcp.Client`` session per server (streamable HTTP, or stdio: then the server
is this worker's child process). Each connection is owned by one task that (re)connects with
backoff, lists the server's tools (``tools/list``) on connect, on a change event
(``subscriptions/listen``, where the server offers it) and every ``refresh_interval_s`` —
the periodic listing doubles as the health check that notices a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import CallToolResult, Tool
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from services.toolgateway.policy import Annotations
from services.toolgateway.settings import ToolServer

log = structlog.get_logger("stellwerk.toolgateway.mcp")

_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0)
# A stdio server inherits only these from the gateway, plus the tool zone's own STELLWERK_*
# settings (STELLWERK_SEARCH_*, STELLWERK_TICKETS_*, ...) — never the gateway's NATS
# credentials or anything else that looks like a secret.
_INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
_SECRET_MARKERS: Final = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "KEY")


def inherited(name: str) -> bool:
    if name in _INHERITED_ENV:
        return True
    return (
        name.startswith("STELLWERK_")
        and not name.startswith("STELLWERK_NATS_")
        and not any(marker in name for marker in _SECRET_MARKERS)
    )


class ToolServerUnavailable(RuntimeError):
    """The server is not connected, the connection broke, or the call timed out."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    annotations: Annotations


def spec_of(server: str, tool: Tool) -> ToolSpec:
    hints = tool.annotations
    return ToolSpec(
        server=server,
        name=tool.name,
        description=tool.description or "",
        input_schema=dict(tool.input_schema),
        annotations=Annotations(
            read_only=hints.read_only_hint if hints else None,
            destructive=hints.destructive_hint if hints else None,
        ),
    )


def client_target(server: ToolServer) -> str | StdioServerParameters:
    if server.transport == "http":
        if not server.url:
            raise ValueError(f"tool server {server.name}: transport http needs a url")
        return server.url
    if not server.command:
        raise ValueError(f"tool server {server.name}: transport stdio needs a command")
    argv = [sys.executable if part == "{python}" else part for part in server.command]
    env = {k: v for k, v in os.environ.items() if inherited(k)}
    return StdioServerParameters(command=argv[0], args=argv[1:], env={**env, **server.env})


@dataclass
class McpConnection:
    config: ToolServer
    refresh_interval_s: float
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    _client: Client | None = None
    _listed: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_listed(self) -> None:
        await self._listed.wait()

    def refresh_soon(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Own the connection for the life of the worker."""
        failures = 0
        while True:
            try:
                async with Client(client_target(self.config), cache=None) as client:
                    self._client = client
                    failures = 0
                    await self._serve(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect with backoff
                log.warning("tool_server_disconnected", server=self.name, error=type(exc).__name__)
            finally:
                self._client = None
            await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
            failures += 1

    async def _serve(self, client: Client) -> None:
        await self._list(client)
        watcher = asyncio.create_task(self._watch_changes(client))
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.refresh_interval_s)
                self._wake.clear()
                await self._list(client)  # raises when the server is gone: reconnect
        finally:
            watcher.cancel()

    async def _list(self, client: Client) -> None:
        tools: dict[str, ToolSpec] = {}
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends cannot hang the worker
            page = await client.list_tools(cursor=cursor)
            tools.update({t.name: spec_of(self.name, t) for t in page.tools})
            cursor = page.next_cursor
            if cursor is None:
                break
        if set(tools) != set(self.tools):
            log.info("tools_listed", server=self.name, tools=len(tools))
        self.tools = tools
        self._listed.set()

    async def _watch_changes(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a server without listen: the periodic listing covers it
            return

    async def call(
        self, tool: str, arguments: Mapping[str, Any], meta: dict[str, Any], timeout_s: float
    ) -> CallToolResult:
        client = self._client
        if client is None:
            raise ToolServerUnavailable("not_connected")
        try:
            return await asyncio.wait_for(
                # meta is a TypedDict with extra items (PEP 728), which mypy cannot express yet.
                client.call_tool(tool, dict(arguments), read_timeout_seconds=timeout_s, meta=meta),  # type: ignore[arg-type]
                timeout_s + 1.0,
            )
        except TimeoutError:
            raise ToolServerUnavailable("timeout") from None
        except MCPError as exc:
            if exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                self._wake.set()
                raise ToolServerUnavailable("timeout" if exc.code == REQUEST_TIMEOUT else "connection_closed") from None
            raise
        except Exception as exc:  # noqa: BLE001 - transport failure: check the connection now
            self._wake.set()
            raise ToolServerUnavailable(type(exc).__name__) from None


class McpPool:
    def __init__(self, servers: list[ToolServer], refresh_interval_s: float) -> None:
        self.connections = {s.name: McpConnection(s, refresh_interval_s) for s in servers}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for connection in self.connections.values():
            self._tasks.append(asyncio.create_task(connection.run(), name=f"mcp-{connection.name}"))

    async def wait_listed(self, timeout_s: float) -> list[str]:
        """Wait until every server listed its tools once; return the ones that did not."""
        waits = [asyncio.create_task(c.wait_listed()) for c in self.connections.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for task in pending:
                task.cancel()
        return [c.name for c in self.connections.values() if not c._listed.is_set()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def tool(self, server: str, name: str) -> ToolSpec | None:
        connection = self.connections.get(server)
        return connection.tools.get(name) if connection else None

    def knows_server(self, server: str) -> bool:
        return server in self.connections

    def connected(self) -> dict[str, bool]:
        return {name: c.connected for name, c in self.connections.items()}

    def catalog(self) -> list[ToolSpec]:
        return [spec for c in self.connections.values() for spec in c.tools.values()]

    async def call(
        self, server: str, tool: str, arguments: Mapping[str, Any], meta: dict[str, Any], timeout_s: float
    ) -> CallToolResult:
        connection = self.connections.get(server)
        if connection is None:
            raise ToolServerUnavailable("unknown_server")
        return await connection.call(tool, arguments, meta, timeout_s)
