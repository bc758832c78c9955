"""The tickets MCP server (in process, through the official MCP client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import Client

from services.mcp_servers.tickets.server import build_server
from services.mcp_servers.tickets.store import TicketStore


@asynccontextmanager
async def connected(tmp_path: Path) -> AsyncIterator[Client]:
    # Not an async fixture: the MCP client's anyio scopes must be left in the task that
    # entered them, and pytest-asyncio tears fixtures down in another.
    async with Client(build_server(TicketStore(tmp_path / "t.db"))) as client:
        yield client


async def test_read_and_write_tools_are_annotated(tmp_path: Path) -> None:
    async with connected(tmp_path) as tickets:
        tools = {t.name: t for t in (await tickets.list_tools()).tools}
        assert set(tools) == {"get_ticket", "search_tickets", "create_ticket", "update_ticket_status"}
        read_only = {name for name, t in tools.items() if t.annotations and t.annotations.read_only_hint}
        assert read_only == {"get_ticket", "search_tickets"}


async def test_create_update_and_read(tmp_path: Path) -> None:
    async with connected(tmp_path) as tickets:
        created = await tickets.call_tool("create_ticket", {"title": "Scanner offline", "priority": "high"})
        assert created.structured_content is not None
        ticket_id = created.structured_content["id"]
        updated = await tickets.call_tool(
            "update_ticket_status", {"ticket_id": ticket_id, "status": "resolved", "comment": "Cable replaced"}
        )
        assert updated.structured_content is not None and updated.structured_content["status"] == "resolved"
        read = await tickets.call_tool("get_ticket", {"ticket_id": ticket_id})
        assert read.structured_content is not None
        assert [c["body"] for c in read.structured_content["comments"]] == ["Cable replaced"]
        found = await tickets.call_tool("search_tickets", {"status": "resolved"})
        assert found.structured_content is not None
        assert [t["id"] for t in found.structured_content["tickets"]] == [ticket_id]


async def test_missing_ticket_is_a_tool_error(tmp_path: Path) -> None:
    async with connected(tmp_path) as tickets:
        result = await tickets.call_tool("get_ticket", {"ticket_id": 999})
        assert result.is_error


def test_demo_tickets_are_seeded_once(tmp_path: Path) -> None:
    TicketStore(tmp_path / "t.db").close()
    store = TicketStore(tmp_path / "t.db")
    assert len(store.search(status=None, priority=None, text=None, limit=50)) == 3
