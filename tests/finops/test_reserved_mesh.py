"""Reserved capacity (PTU, issue 17) in a real mesh: requests for the API's class go to the
reserved route while its throughput lasts, then spill over to pay-as-you-go — marked on the
decision, the router's audit record and the usage event — and ``stellwerk finops report``
shows the reservation's fixed cost, utilisation, break-even and the spill-over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import yaml
from nats.aio.client import Client
from typer.testing import CliRunner

from schemas.events import AuditEvent, UsageRecorded
from services.finops.cli import app
from services.finops.replay import read_usage
from services.runtime.bus import connect
from stellwerk.supervisor import Mesh
from tests.integration.mesh import audit_events, eventually, running_mesh, write_test_config

API_KEY = "sk-stellwerk-demo"
RESERVED_TPM = 60  # tokens per window: a few calls use it up


@pytest.fixture
async def nc(mesh: Mesh) -> AsyncIterator[Client]:
    """A client of the mesh's own server (tests/finops/conftest.py's ``nc`` is another one)."""
    client = await connect(mesh.url, "test", persistent=False)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("ptu-mesh")
    path = write_test_config(root)
    config = yaml.safe_load(path.read_text())
    api = next(r for r in config["routes"] if r["name"] == "api-gpt52")
    config["routes"].append({**api, "name": "api-ptu", "cost_rank": 4})  # dearer by rank: preferred as reserved
    payg = next(d for d in config["deployments"] if d["name"] == "api-gpt52-1")
    config["deployments"].append({
        **payg, "name": "api-ptu-1", "route": "api-ptu", "input_price_per_1k": 0.0, "output_price_per_1k": 0.0,
        "tokens_per_minute": RESERVED_TPM, "quota_window_s": 3600,  # one window for the module: no rollover
        "reserved": {"monthly_price": 1500.0, "payg_input_price_per_1k": 0.00175, "payg_output_price_per_1k": 0.014},
    })
    path.write_text(yaml.safe_dump(config))
    with running_mesh(root, path) as running:
        yield running


async def chat(mesh: Mesh, text: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            mesh.gateway_url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}", "X-Stellwerk-Quality-Tier": "high"},
            json={"model": "stellwerk", "messages": [{"role": "user", "content": text}]},
        )
    assert response.status_code == 200, response.text
    governance: dict[str, Any] = response.json()["stellwerk"]
    return governance


async def test_reserved_route_first_then_spill_over_to_pay_as_you_go(mesh: Mesh, nc: Client) -> None:
    first = await chat(mesh, "Bitte fasse den Vorgang zusammen.")
    assert (first["routing"]["route"], first["routing"]["rule_id"]) == ("api-ptu", "quality.high")

    # The calls use up the reserved throughput (the inference workers count it into KV
    # capacity quota.api-ptu; the router watches it): later requests spill over.
    async def spilled() -> dict[str, Any] | None:
        governance = await chat(mesh, "Und noch eine Zusammenfassung, bitte.")
        return governance if governance["routing"]["route"] == "api-gpt52" else None

    spill = await eventually(spilled, timeout_s=30)
    assert spill["routing"]["rule_id"] == "quality.high"
    assert "spillover_from" not in first["routing"]
    assert spill["routing"]["spillover_from"] == "api-ptu"  # the caller sees it too

    # The router's audit record says why: the reserved route was full; while it had room, the
    # decision named pay-as-you-go as the first fallback.
    async def router_record(request_id: str) -> AuditEvent | None:
        return next((e for e in await audit_events(nc.jetstream())
                     if e.request_id == request_id and e.stage == "router"), None)

    reserved_record = await eventually(lambda: router_record(first["request_id"]))
    assert "spillover_from" not in reserved_record.attributes and reserved_record.fallbacks[0] == "api-gpt52"
    spill_record = await eventually(lambda: router_record(spill["request_id"]))
    assert spill_record.attributes["spillover_from"] == "api-ptu"

    # The usage events carry it: FinOps sees what ran on the reservation and what spilled over.
    async def usage_of(request_id: str) -> UsageRecorded | None:
        async for _, event in read_usage(nc.jetstream()):
            if event.request_id == request_id:
                return event
        return None

    reserved_call = await eventually(lambda: usage_of(first["request_id"]))
    spilled_call = await eventually(lambda: usage_of(spill["request_id"]))
    assert (reserved_call.deployment, reserved_call.spillover_from, reserved_call.cost) == ("api-ptu-1", None, 0.0)
    assert (spilled_call.deployment, spilled_call.spillover_from) == ("api-gpt52-1", "api-ptu")
    assert spilled_call.cost > 0

    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["report", "--period", "today", "--format", "json"],
        env={"STELLWERK_NATS_URL": mesh.url, "STELLWERK_CONFIG_FILE": str(mesh.config_file)},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [ptu] = report["reserved"]
    assert ptu["deployment"] == "api-ptu-1" and ptu["requests"] >= 1 and ptu["tokens"] >= RESERVED_TPM
    assert ptu["fixed_cost"] > 0 and ptu["utilisation"] > 0
    assert ptu["break_even_utilisation"] is not None and ptu["payg_equivalent"] > 0
    assert ptu["spillover"]["requests"] >= 1 and ptu["spillover"]["by_deployment"]["api-gpt52-1"] >= 1
    assert report["total_cost"] == pytest.approx(report["total"]["cost"] + report["fixed_cost"])
