"""How the gateway reaches its MCP servers."""

from __future__ import annotations

import sys

import pytest
from mcp import StdioServerParameters

from services.toolgateway.mcp_pool import client_target, inherited
from services.toolgateway.settings import ToolServer


def test_stdio_servers_inherit_no_credentials() -> None:
    assert inherited("PATH") and inherited("STELLWERK_SEARCH_SEARXNG_URL") and inherited("STELLWERK_TICKETS_DB")
    for name in ("STELLWERK_NATS_PASSWORD", "STELLWERK_NATS_USER", "STELLWERK_AUDIT_SEAL_KEY",
                 "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY"):
        assert not inherited(name)


def test_targets() -> None:
    stdio = client_target(ToolServer(name="tickets", command=["{python}", "-m", "x"], env={"A": "1"}))
    assert isinstance(stdio, StdioServerParameters)
    assert (stdio.command, stdio.args) == (sys.executable, ["-m", "x"])
    assert stdio.env is not None and stdio.env["A"] == "1"
    assert client_target(ToolServer(name="search", transport="http", url="http://h:1/mcp")) == "http://h:1/mcp"
    with pytest.raises(ValueError, match="needs a url"):
        client_target(ToolServer(name="search", transport="http"))
