"""Run the tickets MCP server: ``python -m services.mcp_servers.tickets [--transport http]``.

The database is ``--db`` or ``STELLWERK_TICKETS_DB`` (default ``.stellwerk/tickets.db``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from services.mcp_servers.tickets.server import build_server
from services.mcp_servers.tickets.store import TicketStore


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.mcp_servers.tickets")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--db", type=Path, default=Path(os.environ.get("STELLWERK_TICKETS_DB", ".stellwerk/tickets.db")))
    args = parser.parse_args()
    server = build_server(TicketStore(args.db))
    if args.transport == "http":
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
