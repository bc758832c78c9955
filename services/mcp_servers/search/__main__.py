"""Run the search MCP server: ``python -m services.mcp_servers.search [--transport http]``."""

from __future__ import annotations

import argparse

from services.mcp_servers.search.config import SearchSettings
from services.mcp_servers.search.retention import RetentionStore
from services.mcp_servers.search.searxng import SearxngClient
from services.mcp_servers.search.server import build_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.mcp_servers.search")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    settings = SearchSettings()
    config = settings.load()
    server = build_server(
        config, SearxngClient(config.searxng_url, config.timeout_s), RetentionStore(settings.retention_db)
    )
    if args.transport == "http":
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
