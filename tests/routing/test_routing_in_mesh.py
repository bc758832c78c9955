"""Every routing path through a real mesh, driven by real runtime signals.

Simulator faults and load make the signals real: 500s open the inference worker's circuit
breaker (KV provider_health), a queue on the local simulator shows in its /metrics (KV
capacity), API tokens count against the per-minute quota (KV capacity quota.*).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from nats.aio.client import Client

from schemas.events import AuditEvent
from stellwerk.supervisor import Mesh
from tests.integration.mesh import audit_events, eventually, running_mesh, write_test_config

API_KEY = "sk-stellwerk-demo"
QUOTA_TPM = 3000


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("routing-mesh")
    path = write_test_config(root)
    config = yaml.safe_load(path.read_text())
    for simulator in config["simulators"]:
        if simulator["name"] == "local-vllm":
            simulator["max_num_seqs"] = 1  # a second concurrent request has to wait
        else:
            simulator["max_model_len"] = 200_000
    for deployment in config["deployments"]:
        if deployment["provider"] == "hosted_vllm":
            # Every local route is served by the local simulator: all of them are full at once.
            deployment["max_requests_waiting"] = 0
        else:
            deployment["tokens_per_minute"] = QUOTA_TPM
            deployment["quota_window_s"] = 3600  # one window for the whole module: no rollover races
            deployment["breaker_cooldown_s"] = 3
    path.write_text(yaml.safe_dump(config))
    with running_mesh(root, path, extra_env={"STELLWERK_ACK_WAIT_S": "5"}) as running:
        yield running


async def chat(mesh: Mesh, text: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            mesh.gateway_url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}", **{f"X-Stellwerk-{k}": v for k, v in headers.items()}},
            json={"model": "stellwerk", "messages": [{"role": "user", "content": text}]},
        )


def routing_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    governance: dict[str, Any] = response.json()["stellwerk"]
    return governance


async def faults(mesh: Mesh, simulator: str, **settings: float) -> None:
    port = next(s.port for s in mesh.config.simulators if s.name == simulator)
    async with httpx.AsyncClient() as http:
        (await http.post(f"http://127.0.0.1:{port}/admin/faults", json=settings)).raise_for_status()


async def audit_of(nc: Client, request_id: str) -> dict[str, list[AuditEvent]]:
    found: dict[str, list[AuditEvent]] = {}
    for event in await audit_events(nc.jetstream()):
        if event.request_id == request_id:
            found.setdefault(event.stage, []).append(event)
    return found


async def test_static_rules(mesh: Mesh) -> None:
    assert routing_of(await chat(mesh, "hallo"))["routing"]["rule_id"] == "default.local_first"
    high = routing_of(await chat(mesh, "bitte gründlich", **{"Quality-Tier": "high"}))["routing"]
    assert (high["route"], high["rule_id"]) == ("api-gpt52", "quality.high")
    secret = routing_of(await chat(mesh, "intern", **{"Data-Sensitivity": "highly_confidential", "Quality-Tier": "high"}))
    assert (secret["routing"]["route"], secret["routing"]["rule_id"]) == ("local-vllm", "sensitivity.local_only")
    low = routing_of(await chat(mesh, "billig", **{"Budget-Class": "low", "Quality-Tier": "high"}))["routing"]
    assert low["rule_id"] == "budget.low"


async def test_local_overload_sends_requests_to_the_api(mesh: Mesh, nc: Client) -> None:
    await faults(mesh, "local-vllm", ttft_ms=2500)
    try:
        slow = [asyncio.create_task(chat(mesh, f"langsam {i}")) for i in range(2)]

        async def overloaded() -> dict[str, Any] | None:
            governance = routing_of(await chat(mesh, "schnell bitte"))
            return governance if governance["routing"]["rule_id"] == "availability.local_unavailable" else None

        governance = await eventually(overloaded, timeout_s=20)
        assert governance["routing"]["route"] == "api-gpt52"
        router = (await audit_of(nc, governance["request_id"]))["router"][0]
        assert router.attributes["local_capacity_ok"] == "false"
        assert router.route == "api-gpt52" and router.policy_version
        # Data that must stay in the house has nowhere to go now: a typed refusal, not the API.
        refused = await chat(mesh, "vertraulich", **{"Data-Sensitivity": "highly_confidential"})
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "no_route_available"
        assert error["stellwerk"]["rule_id"] == "sensitivity.local_only.unavailable"
        assert int(refused.headers["Retry-After"]) > 0
    finally:
        await faults(mesh, "local-vllm", ttft_ms=0)
    for response in await asyncio.gather(*slow):
        assert response.status_code == 200

    async def recovered() -> bool:
        return routing_of(await chat(mesh, "wieder normal"))["routing"]["rule_id"] == "default.local_first"

    assert await eventually(recovered, timeout_s=20)


async def test_api_errors_open_the_breaker_and_api_traffic_goes_local(mesh: Mesh, nc: Client) -> None:
    await faults(mesh, "api-gpt52", rate_500=1.0)
    try:
        first = routing_of(await chat(mesh, "erste Anfrage", **{"Quality-Tier": "high"}))
        # The decision allowed a local fallback, so the caller still gets an answer.
        assert first["routing"]["rule_id"] == "quality.high"
        assert first["deployment"].startswith("local-vllm")
        story = await eventually(lambda: _nonempty(audit_of(nc, first["request_id"]), "inference"))
        completed = [e for e in story["inference"] if e.outcome == "fallback"]
        assert completed and completed[0].attributes["fallback_from"] == "api-gpt52"
        assert any(e.outcome.startswith("attempt_failed") and e.route == "api-gpt52" for e in story["inference"])

        async def breaker_open() -> dict[str, Any] | None:
            governance = routing_of(await chat(mesh, "noch eine", **{"Quality-Tier": "high"}))
            return governance if governance["routing"]["rule_id"] == "availability.api_unavailable" else None

        governance = await eventually(breaker_open, timeout_s=20)
        assert governance["routing"]["route"] == "local-vllm"
        router = (await audit_of(nc, governance["request_id"]))["router"][0]
        assert "api-gpt52=down" in router.attributes["health"]
        # Local-only data never falls back to the API, whatever happens.
        secret = routing_of(await chat(mesh, "geheim", **{"Data-Sensitivity": "highly_confidential"}))
        assert secret["routing"]["route"] == "local-vllm"
    finally:
        await faults(mesh, "api-gpt52", rate_500=0.0)


async def test_long_prompts_go_to_the_api_until_its_quota_is_spent(mesh: Mesh, nc: Client) -> None:
    long_prompt = "Aktenvermerk zum Leistungsfall mit allen Anlagen und Gutachten. " * 3500  # > 32k tokens

    async def api_back() -> bool:  # the previous test's breaker closes after its cool-down
        return routing_of(await chat(mesh, "wieder da?", **{"Quality-Tier": "high"}))["deployment"].startswith("api")

    assert await eventually(api_back, timeout_s=40)
    # Too long for local: the API takes it, and its ~40k tokens spend the 3k-token quota.
    governance = routing_of(await chat(mesh, long_prompt))
    assert (governance["routing"]["route"], governance["routing"]["rule_id"]) == ("api-gpt52", "context.too_long")

    async def quota_seen() -> dict[str, Any] | None:
        governance = routing_of(await chat(mesh, "kurz", **{"Quality-Tier": "high"}))
        return governance if governance["routing"]["rule_id"] == "availability.api_unavailable" else None

    governance = await eventually(quota_seen, timeout_s=10)
    assert governance["routing"]["route"] == "local-vllm"
    router = (await audit_of(nc, governance["request_id"]))["router"][0]
    assert router.attributes["api_quota_ok"] == "false"
    # Too long for local and the API's quota is spent: a typed refusal with a retry hint.
    refused = await chat(mesh, long_prompt)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["stellwerk"]["rule_id"] == "context.too_long.api_unavailable"
    assert int(refused.headers["Retry-After"]) > 0


async def _nonempty(coro: Any, stage: str) -> dict[str, list[AuditEvent]] | None:
    found: dict[str, list[AuditEvent]] = await coro
    return found if found.get(stage) else None


# --- routes as data (issue 13): a route added by config only, a budget downgrade ---------------


@pytest.fixture(scope="module")
def long_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The default config plus a route no code or policy names: local-long, 128k tokens."""
    root = tmp_path_factory.mktemp("routes-as-data")
    path = write_test_config(root)
    config = yaml.safe_load(path.read_text())
    local = next(s for s in config["simulators"] if s["name"] == "local-vllm")
    local["max_model_len"] = 131072
    local["served_models"] = [*local.get("served_models", []), "stellwerk-local-long"]
    config["routes"].append({"name": "local-long", "class": "long-context", "locality": "local",
                             "capabilities": ["chat", "tools", "json_schema"], "context_tokens": 131072,
                             "cost_rank": 2})
    config["deployments"].append({"name": "local-long-1", "route": "local-long", "provider": "hosted_vllm",
                                  "model": "stellwerk-local-long", "api_base": f"http://127.0.0.1:{local['port']}/v1",
                                  "model_version": "llama-3.3-70b-128k@2026-09"})
    config["budgets"] = [{"id": "coding-cap", "scope": "usecase", "scope_id": "coding", "limit": 0.000001,
                          "action": "downgrade"}]  # the first paid answer spends it
    path.write_text(yaml.safe_dump(config))
    with running_mesh(root, path) as running:
        yield running


async def test_a_route_added_by_config_only_takes_long_local_only_prompts(long_mesh: Mesh) -> None:
    long_prompt = "Aktenvermerk zum Leistungsfall mit allen Anlagen und Gutachten. " * 3500  # > 32k tokens
    governance = routing_of(await chat(long_mesh, long_prompt, **{"Data-Sensitivity": "highly_confidential"}))
    assert (governance["routing"]["route"], governance["routing"]["rule_id"]) == ("local-long", "sensitivity.local_only")
    assert governance["deployment"] == "local-long-1"
    short = routing_of(await chat(long_mesh, "kurz", **{"Data-Sensitivity": "highly_confidential"}))
    assert short["routing"]["route"] == "local-vllm"


async def test_a_budget_downgrade_moves_to_the_smaller_route_of_the_same_capability(long_mesh: Mesh) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        async def coding() -> httpx.Response:
            return await http.post(
                long_mesh.gateway_url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}", "X-Stellwerk-Usecase-Class": "coding",
                         "X-Stellwerk-Quality-Tier": "high"},
                json={"model": "stellwerk", "messages": [{"role": "user", "content": "def f(): pass"}]},
            )

        first = routing_of(await coding())
        assert (first["routing"]["route"], first["routing"]["rule_id"]) == ("api-gpt52", "quality.high")

        async def downgraded() -> dict[str, Any] | None:
            governance = routing_of(await coding())
            return governance if governance["routing"]["rule_id"] == "budget.downgrade" else None

        governance = await eventually(downgraded, timeout_s=20)
        assert governance["routing"]["route"] == "local-small"
        assert governance["deployment"] == "local-small-1"
