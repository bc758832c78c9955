"""Call tools through the tool gateway (public API; the bus logic is the tool gateway's own
client, ``services.toolgateway.client``).

    async with await ToolsClient.connect(
        "nats://127.0.0.1:4222", tenant="acme-insurance", business_unit="claims",
        user_role="analyst", agent_id="claims-assistant",
    ) as tools:
        result = await tools.call("search.web_search", {"query": "Kfz-Versicherung Tarife"})
"""

from __future__ import annotations

from services.toolgateway.client import (
    ToolCallTimeout,
    ToolGatewayUnavailable,
    ToolsClient,
    decide_approval,
    list_tools,
    request_call,
    split_tool,
)

__all__ = [
    "ToolCallTimeout",
    "ToolGatewayUnavailable",
    "ToolsClient",
    "decide_approval",
    "list_tools",
    "request_call",
    "split_tool",
]
