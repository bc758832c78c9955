"""One org-identifier change reaches chat and tools alike (issue 11).

A whole mesh (real processes, real nats-server) whose DLP workers read a private copy of
``org_identifiers.yaml``. Before the edit a code like ``QZ-739214`` passes both a chat
request and a tool call's arguments; after one edit of the data file — no restart — the
DLP workers' reload makes it a ``PROJECT_CODE`` in both: the chat prompt is redacted before
the model sees it, and the tool gateway's screening (on the bus, by the same workers)
records it in the call's arguments.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from nats.aio.client import Client

from schemas.events import ChatMessage, DlpDecision, RequestResult, ToolCallResult
from services.dlp.settings import PACKAGE_DIR
from stellwerk.client import StellwerkClient
from stellwerk.supervisor import Mesh
from stellwerk.tools_client import ToolsClient
from tests.integration.mesh import eventually, running_mesh, write_test_config
from tests.toolgateway.test_dlp_on_the_bus import CODE, add_project_code_pattern


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("org-identifiers")
    shutil.copytree(PACKAGE_DIR / "data", root / "dlp-data")
    config = write_test_config(
        root,
        tool_servers=[{"name": "tickets", "transport": "stdio", "timeout_s": 10,
                       "command": ["{python}", "-m", "services.mcp_servers.tickets"]}],
    )
    scale = {"dlp": 1, "router": 1, "inference": 1, "toolgateway": 1}
    env = {"STELLWERK_DLP_ORG_IDENTIFIERS_FILE": str(root / "dlp-data" / "org_identifiers.yaml"),
           "STELLWERK_TICKETS_DB": str(root / "tickets.db")}
    with running_mesh(root, config, scale=scale, extra_env=env) as running:
        running.org_file = root / "dlp-data" / "org_identifiers.yaml"  # type: ignore[attr-defined]
        yield running


async def chat(nc: Client) -> RequestResult:
    client = StellwerkClient(nc)
    return await client.chat([ChatMessage(role="user", content=f"Bitte Projekt {CODE} zusammenfassen.")],
                             tenant="acme-insurance", business_unit="claims", user_role="analyst", timeout_s=30)


async def tool_call(nc: Client) -> ToolCallResult:
    tools = ToolsClient(nc, tenant="acme-insurance", business_unit="claims", user_role="analyst",
                        agent_id="org-id-test")
    return await tools.call("tickets.search_tickets", {"text": f"Projekt {CODE}"}, timeout_s=30)


def types(decision: DlpDecision | None) -> set[str]:
    assert decision is not None
    return {e.type for e in decision.entities}


async def test_one_data_file_edit_screens_chat_and_tool_calls(mesh: Mesh, nc: Client) -> None:
    before_chat, before_tool = await chat(nc), await tool_call(nc)
    assert before_chat.status == "ok", before_chat.error
    assert "PROJECT_CODE" not in types(before_chat.dlp_input)
    assert before_chat.content is not None and CODE in before_chat.content  # the echo model saw it
    assert before_tool.status == "ok", before_tool.error
    assert "PROJECT_CODE" not in types(before_tool.dlp_input)

    add_project_code_pattern(mesh.org_file)  # type: ignore[attr-defined]

    async def chat_redacted() -> RequestResult | None:
        result = await chat(nc)
        return result if "PROJECT_CODE" in types(result.dlp_input) else None

    after_chat = await eventually(chat_redacted, timeout_s=30)  # the workers reload every 2 s
    assert after_chat.status == "ok" and after_chat.dlp_input is not None
    assert after_chat.dlp_input.action == "redact"
    assert after_chat.content is not None and CODE not in after_chat.content  # the model never saw it
    assert "<PROJECT_CODE>" in after_chat.content

    after_tool = await tool_call(nc)  # the same workers screen tools: no second reload to wait for
    assert after_tool.status == "ok", after_tool.error
    assert after_tool.dlp_input is not None and after_tool.dlp_input.action == "redact"
    assert types(after_tool.dlp_input) == {"PROJECT_CODE"}
