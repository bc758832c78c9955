"""The search MCP server (in process, through the official MCP client) against a local
stand-in for SearXNG: domain rules and retention per use case."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from services.kernel.call_context import CallContext
from services.mcp_servers.search.config import SearchConfig, UsecaseRules
from services.mcp_servers.search.domains import DomainRules
from services.mcp_servers.search.retention import Reference, RetentionStore
from services.mcp_servers.search.searxng import SearxngClient
from services.mcp_servers.search.server import build_server
from tests.toolgateway.searxng_stub import searxng_stub


def test_domain_rules_cover_subdomains_and_deny_wins() -> None:
    rules = DomainRules.of(allow=["bund.de", "example.org"], deny=["intern.example.org"])
    assert rules.permits("https://www.bmi.bund.de/x")
    assert rules.permits("https://example.org")
    assert not rules.permits("https://intern.example.org/a")
    assert not rules.permits("https://a.intern.example.org/a")
    assert not rules.permits("https://notbund.de/x")  # a suffix is not a subdomain
    assert not rules.permits("ftp://bund.de/x")
    assert not rules.permits("javascript:alert(1)")
    assert DomainRules.of(allow=[], deny=["pastebin.com"]).permits("https://news.example.net/")


def test_retention_keeps_references_only_and_purges(tmp_path: Path) -> None:
    store = RetentionStore(tmp_path / "r.db")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    refs = [Reference(url="https://www.bund.de/a", title="A")]
    assert store.keep(query="q", usecase="chat", tenant="t", references=refs, retention_days=0, now=t0) is None
    search_id = store.keep(query="secret query", usecase="decision_support", tenant="t", references=refs,
                           retention_days=2, now=t0)
    assert search_id is not None
    kept = store.get(search_id)
    assert kept is not None and kept.references == refs and kept.usecase == "decision_support"
    assert "secret" not in kept.query_sha256
    raw = (tmp_path / "r.db").read_bytes()
    assert b"secret query" not in raw
    assert store.purge(t0 + timedelta(days=1)) == 0
    assert store.purge(t0 + timedelta(days=2)) == 1
    assert store.get(search_id) is None


@pytest.fixture(scope="module")
def searxng() -> Iterator[tuple[str, list[str]]]:
    with searxng_stub() as stub:
        yield stub


CONFIG = SearchConfig(
    deny_domains=["pastebin.com"],
    usecases={
        "default": UsecaseRules(),
        "chat": UsecaseRules(deny_domains=["blocked.example"]),
        "decision_support": UsecaseRules(allow_domains=["bundesfinanzministerium.de"], retention_days=30),
    },
)


@asynccontextmanager
async def connected(searxng: tuple[str, list[str]], tmp_path: Path) -> AsyncIterator[Client]:
    # A context manager, not an async fixture: the MCP client's anyio scopes must be entered
    # and left in one task, and pytest-asyncio tears fixtures down in another.
    server = build_server(CONFIG, SearxngClient(searxng[0], 5.0), RetentionStore(tmp_path / "r.db"))
    async with Client(server) as client:
        yield client


async def _search(client: Client, usecase: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(
        "web_search", arguments, meta=CallContext(usecase_class=usecase, tenant="acme").to_meta()  # type: ignore[arg-type]
    )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_denied_domains_return_nothing(searxng: tuple[str, list[str]], tmp_path: Path) -> None:
    async with connected(searxng, tmp_path) as search:
        found = await _search(search, "chat", query="site:blocked.example Angebote", max_results=10)
        hosts = [hit["url"] for hit in found["results"]]
        assert hosts and not any("blocked.example" in h or "pastebin.com" in h for h in hosts)
        assert found["filtered_out"] == 3
        assert found["search_id"] is None  # chat keeps nothing


async def test_allow_list_and_retention_per_usecase(searxng: tuple[str, list[str]], tmp_path: Path) -> None:
    async with connected(searxng, tmp_path) as search:
        found = await _search(search, "decision_support", query="Kfz Steuer")
        assert [h["url"] for h in found["results"]] == ["https://www.bundesfinanzministerium.de/steuern/kfz.html"]
        assert found["search_id"]


async def test_unknown_usecase_gets_default_rules(searxng: tuple[str, list[str]], tmp_path: Path) -> None:
    async with connected(searxng, tmp_path) as search:
        found = await _search(search, "something_new", query="x", max_results=20)
        urls = [h["url"] for h in found["results"]]
        assert "https://www.blocked.example/page" in urls  # chat's deny-list does not apply
        assert not any("pastebin.com" in u for u in urls)  # the global one does


async def test_tool_is_read_only_and_constrained(searxng: tuple[str, list[str]], tmp_path: Path) -> None:
    async with connected(searxng, tmp_path) as search:
        (tool,) = (await search.list_tools()).tools
        assert tool.name == "web_search"
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.input_schema["properties"]["query"]["maxLength"] == 400


async def test_backend_down_is_a_tool_error(tmp_path: Path) -> None:
    server = build_server(CONFIG, SearxngClient("http://127.0.0.1:9", 1.0), RetentionStore(tmp_path / "r.db"))
    async with Client(server) as client:
        result = await client.call_tool("web_search", {"query": "x"})
    assert result.is_error
