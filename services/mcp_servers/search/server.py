"""The ``search`` MCP server: one read-only tool, ``web_search``.

The rules depend on who asks: the tool gateway passes the caller's use case in the call's
``_meta`` (``services.kernel.call_context``). Results from a denied domain — or, where the
use case has an allow-list, from any domain not on it — never leave this server.
"""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.kernel.call_context import CallContext
from services.mcp_servers.search.config import SearchConfig
from services.mcp_servers.search.domains import DomainRules
from services.mcp_servers.search.retention import Reference, RetentionStore
from services.mcp_servers.search.searxng import Hit, SearchBackendError, SearxngClient

MAX_PAGES = 2  # fetch a second page when the domain rules removed too much of the first


class SearchHit(BaseModel):
    title: str
    url: str
    snippet: str
    engine: str


class SearchResults(BaseModel):
    results: list[SearchHit]
    usecase: str
    filtered_out: int = Field(description="Hits removed by the use case's domain rules.")
    search_id: str | None = Field(default=None, description="Set when the use case retains results.")


async def health(_: Request) -> Response:
    """Polled by ``stellwerk up`` while the server starts, when it is served over HTTP."""
    return JSONResponse({"status": "ok"})


def build_server(config: SearchConfig, backend: SearxngClient, retention: RetentionStore) -> MCPServer:
    server = MCPServer(
        "search",
        version="1.0.0",
        instructions="Search the web through the organisation's SearXNG, within its domain rules.",
        log_level="WARNING",
    )
    server.custom_route("/health", methods=["GET"])(health)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    async def web_search(
        query: Annotated[str, Field(min_length=1, max_length=400, description="What to search for.")],
        ctx: Context,
        max_results: Annotated[int, Field(ge=1, le=20)] = 5,
        language: Annotated[str | None, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = None,
    ) -> SearchResults:
        """Search the web. Results are limited to the domains your use case may use."""
        call = CallContext.from_meta(ctx.request_context.meta)
        rules = config.rules_for(call.usecase_class)
        domains = DomainRules.of(rules.allow_domains, [*config.deny_domains, *rules.deny_domains])
        wanted = min(max_results, config.max_results)
        kept: list[Hit] = []
        filtered = 0
        try:
            for page in range(1, MAX_PAGES + 1):
                hits = await backend.search(query, language=language, page=page)
                for hit in hits:
                    if not domains.permits(hit.url):
                        filtered += 1
                    elif len(kept) < wanted and all(k.url != hit.url for k in kept):
                        kept.append(hit)
                if len(kept) >= wanted or not hits:
                    break
        except SearchBackendError as exc:
            raise ToolError(f"search backend unavailable ({exc})") from None
        search_id = retention.keep(
            query=query,
            usecase=call.usecase_class,
            tenant=call.tenant,
            references=[Reference(url=h.url, title=h.title) for h in kept],
            retention_days=rules.retention_days,
        )
        return SearchResults(
            results=[SearchHit(title=h.title, url=h.url, snippet=h.snippet, engine=h.engine) for h in kept],
            usecase=call.usecase_class,
            filtered_out=filtered,
            search_id=search_id,
        )

    return server
