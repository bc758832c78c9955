"""The tool zone: MCP servers shipped with Stellwerk, one per tool or data source.

Each is a standalone process speaking MCP (official ``mcp`` SDK) over stdio or streamable
HTTP. Agents never reach them directly: the tool gateway (``services.toolgateway``) is the
only client, and it enforces policy, schemas, limits and approvals before every call.
"""
