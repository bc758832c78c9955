"""Tool rate limits: which limits a call counts against, and one limit shared by two workers
through KV (real nats-server). Time is a parameter, never the wall clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from nats.js.kv import KeyValue

from schemas.events import ToolCallRequested, deadline_in
from services.kernel.limit_spec import LimitSpec
from services.runtime.bus import connect, ensure_topology
from services.toolgateway.limiter import ToolRateLimiter, plan
from services.toolgateway.settings import ToolRateLimits

LIMITS = ToolRateLimits(
    agents={"*": LimitSpec(requests=100, per_s=60)},
    users={"erika": LimitSpec(requests=2, per_s=60)},
    tools={"search.web_search": LimitSpec(requests=1000, per_s=60)},
)


def call(user_id: str | None = "erika", tool: str = "web_search") -> ToolCallRequested:
    return ToolCallRequested(
        request_id="r", correlation_id="r", deadline=deadline_in(60), tenant="acme", business_unit="claims",
        user_role="analyst", usecase_class="chat", tool=tool, server="search", agent_id="agent-1", user_id=user_id,
    )


def test_plan_names_each_scope_and_falls_back_to_star() -> None:
    checks = plan(LIMITS, call())
    assert [(c.scope, c.kv_key) for c in checks] == [
        ("agent", "tool.agent.agent-1"),
        ("user", "tool.user.erika"),
        ("tool", "tool.tool.search_web_search"),
    ]
    # no user limit for other users, no tool limit for other tools
    assert [c.scope for c in plan(LIMITS, call("bob", "other"))] == ["agent"]


@pytest_asyncio.fixture
async def kv(nats_url: str) -> AsyncIterator[KeyValue]:
    nc = await connect(nats_url, "test-limiter", persistent=False)
    await ensure_topology(nc.jetstream())
    yield await nc.jetstream().key_value("ratelimits")
    await nc.close()


async def test_two_workers_enforce_one_limit(kv: KeyValue) -> None:
    now = 1_000_000.0
    workers = [ToolRateLimiter(kv, LIMITS, clock=lambda: now) for _ in range(2)]
    assert await workers[0].admit(call()) is None
    assert await workers[1].admit(call()) is None
    refusal = await workers[0].admit(call())
    assert refusal is not None
    assert refusal.rule_id == "ratelimit.tool.user"
    assert refusal.retry_after_s == 30.0  # 2 per 60 s: the next one fits in half a window
    # The refused call charged nothing: the agent's and the tool's documents saw two calls.
    agent = await kv.get("tool.agent.agent-1")
    assert agent.value is not None and b"requests" in agent.value
    later = ToolRateLimiter(kv, LIMITS, clock=lambda: now + 30.0)
    assert await later.admit(call()) is None
