"""The governed request path end to end: real NATS, every service as its own process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.events import AuditRecord, DeadLetter, decode
from schemas.streams import DLQ, KV_BUDGETS
from services.finops.ledger import Totals
from stellwerk.supervisor import Mesh
from tests.integration.mesh import eventually, stored

API_KEY = "sk-stellwerk-demo"
PIPELINE_STAGES = {"gateway", "dlp_input", "router", "inference", "dlp_output", "guard"}
# The guardrails (issue 16) write one record for the prompt and one for the answer.
CHAINED_STAGES = sorted([*PIPELINE_STAGES, "guard"])
SECRET_EMAIL = "erika.mustermann@example.org"


def openai_client(mesh: Mesh, key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key=key, max_retries=0)


async def chain_records(nc: Client, request_id: str) -> list[AuditRecord]:
    records = [decode(data, AuditRecord) for data in await stored(nc.jetstream(), subjects.AUDIT_CHAIN_ALL)]
    return [r for r in records if r.event.request_id == request_id]


async def test_plain_completion_travels_every_stage(mesh: Mesh, nc: Client) -> None:
    client = openai_client(mesh)
    completion = await client.chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": "Wie ist der Status von Vorgang 4711?"}]
    )
    assert completion.choices[0].message.content == "Wie ist der Status von Vorgang 4711?"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    governance = completion.model_extra["stellwerk"]  # type: ignore[index]
    request_id = governance["request_id"]
    assert governance["dlp_input"]["action"] == "allow"
    assert governance["routing"]["route"] == "local-vllm"
    assert governance["routing"]["policy_version"].startswith("sha256:")

    records = await eventually(
        lambda: _when(chain_records(nc, request_id), lambda r: {x.event.stage for x in r} >= PIPELINE_STAGES)
    )
    stages = sorted(r.event.stage for r in records)
    assert stages == CHAINED_STAGES, "exactly one chained record per stage (the guard: input and output)"

    kv = await nc.jetstream().key_value(KV_BUDGETS)

    async def totals() -> Totals | None:
        entry = await kv.get("totals.tenant.acme-insurance")
        found = msgspec.json.decode(entry.value or b"{}", type=Totals)
        return found if any(request_id in c for c in found.recent_call_ids) else None

    counted = await eventually(totals)
    assert counted.prompt_tokens >= completion.usage.prompt_tokens


async def _when(coro, predicate):  # type: ignore[no-untyped-def]
    value = await coro
    return value if predicate(value) else None


async def test_email_is_redacted_before_the_model_and_never_audited(mesh: Mesh, nc: Client) -> None:
    client = openai_client(mesh)
    prompt = f"Bitte antworte an {SECRET_EMAIL} wegen der Rechnung."
    completion = await client.chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": prompt}]
    )
    answer = completion.choices[0].message.content or ""
    # The simulator echoes what the model saw: the address never reached it.
    assert SECRET_EMAIL not in answer
    assert "<EMAIL_ADDRESS>" in answer
    governance = completion.model_extra["stellwerk"]  # type: ignore[index]
    assert governance["dlp_input"]["action"] == "redact"
    assert governance["dlp_input"]["entities"] == {"EMAIL_ADDRESS": 1}
    request_id = governance["request_id"]

    records = await eventually(
        lambda: _when(chain_records(nc, request_id), lambda r: {x.event.stage for x in r} >= PIPELINE_STAGES)
    )
    assert {r.event.stage for r in records} == PIPELINE_STAGES
    raw = b"".join(await stored(nc.jetstream(), subjects.AUDIT_ALL))
    assert request_id.encode() in raw
    assert SECRET_EMAIL.encode() not in raw
    assert b"Rechnung" not in raw and b"antworte" not in raw
    for log in mesh.logs.glob("*.log"):
        assert SECRET_EMAIL not in log.read_text(errors="replace"), log.name


async def test_pseudonymize_is_parsed_strictly(mesh: Mesh) -> None:
    client = openai_client(mesh)
    prompt = f"Bitte antworte an {SECRET_EMAIL}."
    # OpenAI's metadata is string to string: "false" must mean false (bool("false") is True).
    off = await client.chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": prompt}], metadata={"pseudonymize": "false"}
    )
    assert off.choices[0].message.content == "Bitte antworte an <EMAIL_ADDRESS>."
    on = await client.chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": prompt}],
        extra_headers={"X-Stellwerk-Pseudonymize": "true"},
    )
    assert on.choices[0].message.content == prompt, "the model saw a pseudonym, the caller gets it restored"
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="stellwerk", messages=[{"role": "user", "content": prompt}], metadata={"pseudonymize": "no"}
        )
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "invalid_request"
    assert "pseudonymize" in error["message"] and SECRET_EMAIL not in error["message"]


async def test_streaming_completion(mesh: Mesh) -> None:
    client = openai_client(mesh)
    stream = await client.chat.completions.create(
        model="stellwerk",
        messages=[{"role": "user", "content": "Erzähl mir etwas über Stellwerke und Weichen."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == "Erzähl mir etwas über Stellwerke und Weichen."
    assert usage is not None and usage.completion_tokens > 0


async def test_unknown_api_key_gets_401(mesh: Mesh) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        await openai_client(mesh, key="sk-wrong").chat.completions.create(
            model="stellwerk", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 401


async def test_request_past_its_deadline_gets_504(mesh: Mesh) -> None:
    local = next(s for s in mesh.config.simulators if s.name == "local-vllm")
    admin = f"http://127.0.0.1:{local.port}/admin/faults"
    async with httpx.AsyncClient() as http:
        await http.post(admin, json={"ttft_ms": 3000})
        try:
            response = await http.post(
                mesh.gateway_url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}", "X-Stellwerk-Timeout": "0.5"},
                json={"model": "stellwerk", "messages": [{"role": "user", "content": "slow please"}]},
                timeout=10,
            )
        finally:
            await http.post(admin, json={"ttft_ms": 0})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"


async def test_malformed_message_goes_to_dlq_and_worker_keeps_serving(mesh: Mesh, nc: Client) -> None:
    js = nc.jetstream()
    ack = await js.publish(subjects.REQUEST_SUBMITTED, b'{"request_id": 42, "not": "an event"}')

    async def dead_letter() -> DeadLetter | None:
        try:
            msg = await js.get_last_msg(DLQ.name, subjects.dlq("dlp"))
        except NotFoundError:
            return None
        letter = decode(msg.data or b"", DeadLetter)
        return letter if letter.payload.startswith(b'{"request_id": 42') else None

    letter = await eventually(dead_letter)
    assert letter.reason == "malformed"
    assert "request_id" in letter.detail
    assert letter.subject == subjects.REQUEST_SUBMITTED
    assert ack.seq > 0
    completion = await openai_client(mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": "still there?"}]
    )
    assert completion.choices[0].message.content == "still there?"


async def test_killed_worker_loses_nothing(mesh: Mesh, nc: Client) -> None:
    local = next(s for s in mesh.config.simulators if s.name == "local-vllm")
    admin = f"http://127.0.0.1:{local.port}/admin/faults"
    victim = next(p for p in mesh.parts if p.name.startswith("inference-") and p.alive)
    js = nc.jetstream()
    async with httpx.AsyncClient() as http:
        await http.post(admin, json={"ttft_ms": 1500})
        try:
            task = asyncio.create_task(
                openai_client(mesh).chat.completions.create(
                    model="stellwerk", messages=[{"role": "user", "content": "survive a crash"}], timeout=30
                )
            )

            async def in_flight() -> ConsumerInfo | None:
                info = await js.consumer_info("PIPELINE", "inference")
                return info if (info.num_ack_pending or 0) > 0 else None

            before = await eventually(in_flight)
            assert victim.process is not None
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.wait()
            await http.post(admin, json={"ttft_ms": 0})
            mesh.add_worker("inference")
            completion = await task
        finally:
            await http.post(admin, json={"ttft_ms": 0})
    assert completion.choices[0].message.content == "survive a crash"
    request_id = completion.model_extra["stellwerk"]["request_id"]  # type: ignore[index]
    # The consumer sequence counts every delivery, the stream sequence only new messages: the
    # same message handed out again (to the new worker, after the victim's ack wait) moves the
    # first and not the second. Without a redelivery the answer could not have arrived.
    after = await js.consumer_info("PIPELINE", "inference")
    assert before.delivered is not None and after.delivered is not None
    assert after.delivered.stream_seq == before.delivered.stream_seq, "no new message reached inference"
    assert (after.delivered.consumer_seq or 0) > (before.delivered.consumer_seq or 0), "the message was redelivered"
    kv = await js.key_value(KV_BUDGETS)

    async def counted_once() -> bool:
        totals = msgspec.json.decode((await kv.get("totals.tenant.acme-insurance")).value or b"{}", type=Totals)
        return sum(request_id in c for c in totals.recent_call_ids) == 1

    assert await eventually(counted_once)



async def test_one_request_is_one_trace_across_every_service(mesh: Mesh) -> None:
    completion = await openai_client(mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": "trace me"}]
    )
    request_id = completion.model_extra["stellwerk"]["request_id"]  # type: ignore[index]
    trace_file = Path(mesh.extra_env["STELLWERK_TRACE_FILE"])

    def spans() -> list[dict[str, Any]]:
        return [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]

    async def all_stages() -> list[dict[str, Any]] | None:
        mine = [s for s in spans() if (s.get("attributes") or {}).get("stellwerk.request_id") == request_id]
        stages = {s["attributes"].get("stellwerk.stage") for s in mine}
        return mine if {"dlp_input", "router", "inference", "dlp_output"} <= stages else None

    mine = await eventually(all_stages)
    services = {s["resource"]["attributes"]["service.name"] for s in mine}
    assert {"stellwerk-gateway", "stellwerk-dlp", "stellwerk-router", "stellwerk-inference"} <= services
    traces = {(s["context"]["trace_id"], s["resource"]["attributes"]["service.name"], s["name"]) for s in mine}
    assert len({t[0] for t in traces}) == 1, f"every hop continues the caller's trace: {sorted(traces)}"
    assert "trace me" not in trace_file.read_text()


async def test_workers_export_stage_and_decision_metrics(mesh: Mesh) -> None:
    await openai_client(mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": "Schreib an max@example.com"}]
    )
    exposition = ""
    async with httpx.AsyncClient() as http:
        for part in mesh.parts:
            if part.metrics_port and part.alive:
                exposition += (await http.get(f"http://127.0.0.1:{part.metrics_port}/metrics")).text
    for name in (
        'stellwerk_stage_messages_total{outcome="ok",service="dlp",stage="dlp_input"}',
        'stellwerk_dlp_decisions_total{action="redact",direction="input",rule_id=',
        'stellwerk_dlp_entities_total{direction="input",entity_type="EMAIL_ADDRESS"}',
        'stellwerk_routing_decisions_total{route="local-vllm",rule_id="default.local_first"}',
        'stellwerk_inference_calls_total{deployment="local-vllm-1",outcome="completed",route="local-vllm"}',
        "stellwerk_inference_latency_seconds_bucket",
        "stellwerk_stage_duration_seconds_bucket",
    ):
        assert name in exposition, name
    assert "max@example.com" not in exposition
