"""Through the whole mesh: a budget crossing its threshold changes routing for the next requests.

Real nats-server, every service as its own process, the OpenAI-compatible gateway. Each action
has its own use-case budget, so one API call (quality ``high`` goes to ``api-gpt52``) spends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgspec
import openai
import pytest

from schemas.streams import KV_BUDGETS
from services.finops.ledger import StateDoc
from services.runtime.bus import connect
from stellwerk.supervisor import Mesh
from tests.conftest import start_nats
from tests.integration.mesh import eventually, write_test_config

TINY = 0.000001  # EUR: the first API call exhausts it
BUDGETS = [
    {"id": "extraction-cap", "scope": "usecase", "scope_id": "extraction", "limit": TINY, "action": "downgrade"},
    {"id": "coding-cap", "scope": "usecase", "scope_id": "coding", "limit": TINY, "action": "force_local"},
    {"id": "summaries-cap", "scope": "usecase", "scope_id": "summarization", "limit": TINY,
     "action": "block_noncritical"},
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("finops-mesh")
    nats_process, url = start_nats(root / "nats")
    mesh = Mesh(config_file=write_test_config(root, budgets=BUDGETS), state_dir=root / "state", nats_url=url,
                extra_env={"STELLWERK_ACK_WAIT_S": "2"})
    asyncio.run(mesh.start())
    yield mesh
    mesh.stop()
    nats_process.terminate()
    nats_process.wait(timeout=5)


async def ask(mesh: Mesh, usecase: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, Stellwerk governance block or error) of one high-quality request."""
    client = openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key="sk-stellwerk-demo", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="stellwerk", messages=[{"role": "user", "content": f"Bitte {usecase}."}],
            extra_headers={"X-Stellwerk-Quality-Tier": "high", "X-Stellwerk-Usecase-Class": usecase},
        )
    except openai.APIStatusError as exc:
        return exc.status_code, exc.body["stellwerk"] if isinstance(exc.body, dict) else {}  # type: ignore[index]
    finally:
        await client.close()
    return 200, completion.model_extra["stellwerk"]  # type: ignore[index]


async def wait_for_action(mesh: Mesh, usecase: str) -> StateDoc:
    nc = await connect(mesh.url, "test", persistent=False)
    try:
        kv = await nc.jetstream().key_value(KV_BUDGETS)

        async def acting() -> StateDoc | None:
            try:
                state = msgspec.json.decode((await kv.get(f"state.usecase.{usecase}")).value or b"", type=StateDoc)
            except Exception:  # noqa: BLE001 - not written yet
                return None
            return state if state.action != "none" else None

        return await eventually(acting, timeout_s=30)
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("usecase", "action", "rule_after", "route_after"),
    [
        # Downgrade: high quality is no longer honoured, and the standard route gives way to
        # the next cheaper route of the same capabilities (issue 13).
        ("extraction", "downgrade", "budget.downgrade", "local-small"),
        ("coding", "force_local", "budget.exhausted", "local-vllm"),
    ],
)
async def test_a_spent_budget_reroutes_the_next_requests(
    mesh: Mesh, usecase: str, action: str, rule_after: str, route_after: str
) -> None:
    status, first = await ask(mesh, usecase)
    assert status == 200 and first["routing"]["route"] == "api-gpt52" and first["routing"]["rule_id"] == "quality.high"
    state = await wait_for_action(mesh, usecase)
    assert state.action == action and state.level == "exhausted"

    async def rerouted() -> dict[str, Any] | None:
        status, body = await ask(mesh, usecase)
        assert status == 200
        return body if body["routing"]["rule_id"] == rule_after else None

    changed = await eventually(rerouted, timeout_s=10)
    assert changed["routing"]["route"] == route_after
    for _ in range(3):  # and it stays changed
        status, body = await ask(mesh, usecase)
        assert (status, body["routing"]["route"], body["routing"]["rule_id"]) == (200, route_after, rule_after)


async def test_a_spent_budget_blocks_non_critical_requests(mesh: Mesh) -> None:
    status, first = await ask(mesh, "summarization")
    assert status == 200 and first["routing"]["route"] == "api-gpt52"
    await wait_for_action(mesh, "summarization")

    async def blocked() -> dict[str, Any] | None:
        status, body = await ask(mesh, "summarization")
        return body if status == 429 else None

    body = await eventually(blocked, timeout_s=10)
    assert body["rule_id"] == "budget.block_noncritical"
    # A critical use case (decision_support) has no spent budget and is still served.
    status, other = await ask(mesh, "decision_support")
    assert status == 200 and other["routing"]["route"] == "api-gpt52"
