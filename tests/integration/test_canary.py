"""Canary and shadow end to end (issue 17), on a mesh of their own: real nats-server, every
service a process, simulators as model servers, the real ``openai`` client.

The route ``local-vllm`` splits 70/30 between its stable deployment (the echo simulator) and a
canary (a simulator in canned mode, with prompt template chat/assistant-v2); the route
``local-small`` mirrors every request to ``api-gpt52-shadow`` — an external route, served by
the canned simulator too, so an answer of the shadow would be recognisable at the caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import openai
import pytest
import pytest_asyncio
import yaml
from nats.aio.client import Client
from typer.testing import CliRunner, Result

from schemas import subjects
from schemas.events import AuditEvent, UsageRecorded, decode
from schemas.kv import RolloutState
from schemas.streams import KV_ROLLOUTS
from services.runtime.prompts import SHIPPED_PROMPTS_DIR, load_templates
from services.runtime.rollouts import choose_variant
from services.runtime.settings import load_config
from stellwerk.cli import app
from stellwerk.supervisor import Mesh, free_port
from tests.integration.mesh import audit_events, eventually, running_mesh, stored, write_test_config

API_KEY = "sk-stellwerk-demo"
CANNED = "This is a simulated answer from the Stellwerk model simulator."
TEMPLATE = load_templates(SHIPPED_PROMPTS_DIR)["chat/assistant-v2"]


def canary_config(root: Path) -> Path:
    path = write_test_config(root)
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    port = free_port()
    raw["simulators"].append({"name": "canary", "port": port, "model": "stellwerk-local-llama", "mode": "canned",
                              "served_models": ["stellwerk-gpt52"], "ttft_ms": 0, "itl_ms": 0})
    by_name = {d["name"]: d for d in raw["deployments"]}
    base = f"http://127.0.0.1:{port}/v1"
    raw["deployments"] += [
        {**by_name["local-vllm-1"], "name": "local-vllm-canary", "api_base": base, "model_version": "llama-next@canary"},
        {**by_name["api-gpt52-1"], "name": "api-gpt52-shadow", "api_base": base},
    ]
    raw["price_table"]["entries"] += [
        {"deployment": "local-vllm-canary", "valid_from": "2026-01-01", "gpu_class": "h100-80gb"},
        {"deployment": "api-gpt52-shadow", "valid_from": "2026-01-01", "input_per_1k": 0.00125,
         "output_per_1k": 0.01},
    ]
    for route in raw["routes"]:
        if route["name"] == "local-vllm":
            route["variants"] = [
                {"name": "stable", "deployment": "local-vllm-1", "weight": 70},
                {"name": "canary", "deployment": "local-vllm-canary", "weight": 30, "canary": True,
                 "prompt_template": "chat/assistant-v2"},
            ]
            route["rollback"] = {"window_s": 300, "min_requests": 8, "max_error_rate": 0.15}
        if route["name"] == "local-small":
            route["shadow"] = {"deployment": "api-gpt52-shadow", "share": 100}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def canary_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("canary")
    with running_mesh(root, canary_config(root), extra_env={"STELLWERK_ACK_WAIT_S": "2"},
                      expose_metrics=True) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def cnc(canary_mesh: Mesh) -> AsyncIterator[Client]:
    connection = await nats.connect(canary_mesh.url)
    yield connection
    await connection.drain()


def client(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)


async def ask(mesh: Mesh, text: str, model: str = "stellwerk", **headers: str) -> tuple[str, str]:
    completion = await client(mesh).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers or None)
    summary = completion.model_extra["stellwerk"]  # type: ignore[index]
    variant = summary["routing"].get("variant")
    if model == "stellwerk":  # the caller sees which variant answered
        assert variant in ("stable", "canary")
    return summary["request_id"], completion.choices[0].message.content or ""


def of(events: list[AuditEvent], request_id: str, stage: str, outcome: str | None = None) -> list[AuditEvent]:
    return [e for e in events if e.request_id == request_id and e.stage == stage
            and (outcome is None or e.outcome == outcome)]


async def test_the_chosen_variant_is_the_one_called_and_audited(canary_mesh: Mesh, cnc: Client) -> None:
    spec = canary_mesh.config.route("local-vllm")
    assert spec is not None
    answers = await asyncio.gather(*(ask(canary_mesh, f"Frage Nummer {i}") for i in range(24)))
    js = cnc.jetstream()
    events = await eventually(lambda: _trails(js, [r for r, _ in answers]))
    variants = set()
    for i, (request_id, content) in enumerate(answers):
        expected = choose_variant(spec, request_id)  # reproducible from the request id alone
        assert expected is not None
        variants.add(expected.name)
        router = of(events, request_id, "router")[0]
        call = of(events, request_id, "inference", "completed")[0]
        assert router.attributes["variant"] == call.attributes["variant"] == expected.name
        if expected.canary:
            assert content == CANNED and call.deployment == "local-vllm-canary"
            assert call.prompt_template_version == TEMPLATE.version
        else:
            assert content == f"Frage Nummer {i}" and call.deployment == "local-vllm-1"
            assert call.prompt_template_version == "chat-v1"  # the deployment's label: no template
    assert variants == {"stable", "canary"}
    usage = await eventually(lambda: _usage(js, {r for r, _ in answers}, len(answers)))
    assert {u.variant for u in usage} == {"stable", "canary"}
    # Output screening per variant, from the DLP workers' metrics.
    async with httpx.AsyncClient() as http:
        dlp = "\n".join([(await http.get(f"http://127.0.0.1:{part.metrics_port}/metrics")).text
                         for part in canary_mesh.parts
                         if part.name.startswith("dlp") and part.metrics_port and part.alive])
    for variant in ("stable", "canary"):
        assert f'stellwerk_variant_dlp_outcomes_total{{action="allow",route="local-vllm",variant="{variant}"}}' in dlp


async def test_shadow_traffic_never_reaches_the_caller_and_is_booked_as_shadow(canary_mesh: Mesh, cnc: Client) -> None:
    js = cnc.jetstream()
    refused_id, refused_answer = await ask(canary_mesh, "Vertraulich: Quartalszahlen", model="local-small",
                                           **{"X-Stellwerk-Data-Sensitivity": "highly_confidential"})
    answers = await asyncio.gather(*(ask(canary_mesh, f"Spiegel {i}", model="local-small") for i in range(5)))
    for i, (_, content) in enumerate(answers):
        assert content == f"Spiegel {i}"  # the local model's echo, never the shadow's canned text
    assert refused_answer == "Vertraulich: Quartalszahlen"
    ids = {r for r, _ in answers}
    usage = await eventually(lambda: _usage(js, ids, 2 * len(ids)))
    shadows = [u for u in usage if u.shadow]
    assert sorted(u.request_id for u in shadows) == sorted(ids)
    assert {u.deployment for u in shadows} == {"api-gpt52-shadow"} and all(u.variant == "shadow" for u in shadows)
    assert all(u.cost > 0 and u.usage.completion_tokens > 0 for u in shadows)  # accounted like a real call
    assert {u.deployment for u in usage if not u.shadow} == {"local-small-1"}
    events = await audit_events(js)
    for request_id in ids:
        mirrored = of(events, request_id, "inference", "shadow_completed")
        assert len(mirrored) == 1 and mirrored[0].attributes["dlp_output"] == "allow"
        assert of(events, request_id, "router")[0].attributes["shadow"] == "api-gpt52-shadow"
    # Local-only data: the policy would not send it to the external route, so neither is the mirror.
    assert of(events, refused_id, "router")[0].attributes["shadow"] == "refused_by_policy"
    assert not of(events, refused_id, "inference", "shadow_completed")
    booked = await _usage(js, {refused_id}, 1) or []
    assert [u.shadow for u in booked] == [False]


async def test_a_failing_canary_is_rolled_back_everywhere_and_audited(canary_mesh: Mesh, cnc: Client) -> None:
    canary = next(s for s in canary_mesh.config.simulators if s.name == "canary")
    admin = f"http://127.0.0.1:{canary.port}/admin/faults"
    kv = await cnc.jetstream().key_value(KV_ROLLOUTS)
    async with httpx.AsyncClient() as http:
        await http.post(admin, json={"rate_500": 0.5, "seed": 7})
        try:
            state: RolloutState | None = None
            for batch in range(40):
                # Every caller gets an answer: a failed canary call is retried on the stable deployment.
                answers = await asyncio.gather(*(ask(canary_mesh, f"Last {batch}.{i}") for i in range(8)))
                assert all(content for _, content in answers)
                state = await _rolled_back(kv)
                if state is not None:
                    break
            assert state is not None, "the canary was never rolled back"
        finally:
            await http.post(admin, json={"rate_500": 0.0})
    assert state.actor == "system" and state.reason == "error_rate" and state.variant == "canary"
    assert state.requests >= 8 and state.error_rate > 0.15
    events = await audit_events(cnc.jetstream())
    rollback = [e for e in events if e.outcome == "variant_rolled_back"]
    assert len(rollback) == 1  # one record, however many replicas saw the breach
    assert rollback[0].attributes["actor"] == "system" and rollback[0].attributes["variant"] == "canary"
    assert rollback[0].attributes["error_rate"] == repr(state.error_rate)
    assert rollback[0].route == "local-vllm"
    # Weight 0 in the whole mesh: no request reaches the canary any more.
    after = await asyncio.gather(*(ask(canary_mesh, f"Danach {i}") for i in range(16)))
    trail = await eventually(lambda: _trails(cnc.jetstream(), [r for r, _ in after]))
    for request_id, content in after:
        assert content.startswith("Danach")
        assert of(trail, request_id, "router")[0].attributes["variant"] == "stable"
        assert of(trail, request_id, "inference", "completed")[0].deployment == "local-vllm-1"
    async with httpx.AsyncClient() as http:
        metrics = "\n".join([(await http.get(f"http://127.0.0.1:{part.metrics_port}/metrics")).text
                             for part in canary_mesh.parts
                             if part.name.startswith("inference") and part.metrics_port and part.alive])
    assert 'stellwerk_variant_rollbacks_total{reason="error_rate",route="local-vllm",variant="canary"} 1.0' in metrics
    # The operator sees it and restores it; the canary takes its share again on every replica.
    def cli(*args: str) -> Result:  # in a thread: the CLI runs its own event loop
        return CliRunner().invoke(app, [*args, "--nats-url", canary_mesh.url])

    status = await asyncio.to_thread(cli, "rollout", "status", "--format", "json")
    assert status.exit_code == 0, status.output
    assert [(s["route"], s["variant"], s["actor"]) for s in json.loads(status.output)] == [
        ("local-vllm", "canary", "system")]
    restored = await asyncio.to_thread(cli, "rollout", "restore", "local-vllm", "canary", "--actor", "bob")
    assert restored.exit_code == 0, restored.output
    restore_records = [e for e in await audit_events(cnc.jetstream()) if e.outcome == "variant_restored"]
    assert [(e.stage, e.attributes["actor"], e.attributes["variant"]) for e in restore_records] == [
        ("policy", "bob", "canary")]
    again = await asyncio.to_thread(cli, "rollout", "restore", "local-vllm", "canary")
    assert again.exit_code == 1  # nothing to restore any more

    async def canary_answers() -> bool:
        answers = await asyncio.gather(*(ask(canary_mesh, f"Wieder {i}") for i in range(8)))
        return any(content == CANNED for _, content in answers)

    assert await eventually(canary_answers, timeout_s=20)


async def _rolled_back(kv: Any) -> RolloutState | None:
    try:
        entry = await kv.get("local-vllm.canary")
    except Exception:  # noqa: BLE001 - not (yet) rolled back
        return None
    return msgspec.json.decode(entry.value, type=RolloutState) if entry.value else None


async def _trails(js: Any, request_ids: list[str]) -> list[AuditEvent] | None:
    events = await audit_events(js)
    done = {e.request_id for e in events if e.stage == "dlp_output"}
    return events if set(request_ids) <= done else None


async def _usage(js: Any, request_ids: set[str], expected: int) -> list[UsageRecorded] | None:
    found = [decode(data, UsageRecorded) for data in await stored(js, subjects.USAGE_RECORDED)]
    mine = [u for u in found if u.request_id in request_ids]
    return mine if len(mine) >= expected else None


def test_config_loads(tmp_path: Path) -> None:
    config = load_config(canary_config(tmp_path))
    spec = config.route("local-vllm")
    assert spec is not None and [v.name for v in spec.variants] == ["stable", "canary"]
