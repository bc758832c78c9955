"""The ``tickets`` MCP server: two read-only tools and two critical write tools.

Tool annotations tell the gateway which is which (``read_only_hint``); the gateway's policy
makes the writes wait for a human. Argument constraints are part of each tool's JSON Schema,
so the gateway refuses a bad call before it reaches this server.

The tools are ``async`` on purpose: the SDK runs plain functions in worker threads, and a
SQLite connection belongs to the thread that opened it. Each query takes microseconds.
"""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.mcp_servers.tickets.store import Priority, Status, Ticket, TicketNotFound, TicketStore

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
CHANGE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)

TicketId = Annotated[int, Field(ge=1, description="The ticket number.")]


class TicketList(BaseModel):
    tickets: list[Ticket]


async def health(_: Request) -> Response:
    """Polled by ``stellwerk up`` while the server starts, when it is served over HTTP."""
    return JSONResponse({"status": "ok"})


def build_server(store: TicketStore) -> MCPServer:
    server = MCPServer(
        "tickets",
        version="1.0.0",
        instructions="Read and change tickets of the internal ticket system.",
        log_level="WARNING",
    )

    server.custom_route("/health", methods=["GET"])(health)

    @server.tool(annotations=READ)
    async def get_ticket(ticket_id: TicketId) -> Ticket:
        """Read one ticket with its comments."""
        try:
            return store.get(ticket_id)
        except TicketNotFound:
            raise ToolError(f"ticket {ticket_id} not found") from None

    @server.tool(annotations=READ)
    async def search_tickets(
        status: Status | None = None,
        priority: Priority | None = None,
        text: Annotated[str | None, Field(max_length=100, description="Words in title or description.")] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
    ) -> TicketList:
        """Find tickets by status, priority or words, newest first."""
        return TicketList(tickets=store.search(status=status, priority=priority, text=text, limit=limit))

    @server.tool(annotations=WRITE)
    async def create_ticket(
        title: Annotated[str, Field(min_length=3, max_length=200)],
        description: Annotated[str, Field(max_length=4000)] = "",
        priority: Priority = "normal",
    ) -> Ticket:
        """Open a new ticket."""
        return store.create(title=title, description=description, priority=priority)

    @server.tool(annotations=CHANGE)
    async def update_ticket_status(
        ticket_id: TicketId,
        status: Status,
        comment: Annotated[str | None, Field(max_length=2000)] = None,
    ) -> Ticket:
        """Move a ticket to another status, optionally with a comment."""
        try:
            return store.set_status(ticket_id, status, comment)
        except TicketNotFound:
            raise ToolError(f"ticket {ticket_id} not found") from None

    return server
