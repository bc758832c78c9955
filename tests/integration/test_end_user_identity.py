"""End-user identity in events (issue 14), through the whole mesh with the real openai client.

A request naming its end user (OpenAI ``user``) is carried by its keyed, per-tenant pseudonym
on the envelope: in every audit record of the request and in its usage event — the raw id in
neither stream. FinOps reports per end user and enforces a budget scoped to one end user.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import msgspec
import openai
import pytest
from nats.aio.client import Client

from schemas import subjects
from schemas.events import UsageRecorded, decode
from services.kernel.end_user import end_user_hash
from stellwerk.supervisor import Mesh
from tests.conftest import start_nats
from tests.integration.mesh import audit_events, eventually, stored, write_test_config

KEY_ENV = "STELLWERK_TEST_END_USER_KEY"
HASH_KEY = "test-pepper-" + uuid.uuid4().hex  # by reference in the config, as in production
TENANT = "acme-insurance"  # the demo key's tenant
SPENDER = f"bob-{uuid.uuid4().hex}@example.com"  # has a tiny budget of their own
TINY = 0.000001  # EUR: the first API call spends it


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("end-user-mesh")
    os.environ[KEY_ENV] = HASH_KEY  # for this process (the CLI below) and every service's
    budget = {"id": "bob-cap", "scope": "end_user", "scope_id": end_user_hash(TENANT, SPENDER, HASH_KEY),
              "limit": TINY, "action": "block_noncritical"}
    config = write_test_config(root, end_user_hash_key=f"os.environ/{KEY_ENV}", budgets=[budget])
    nats_process, url = start_nats(root / "nats")
    running = Mesh(config_file=config, state_dir=root / "state", nats_url=url,
                   extra_env={"STELLWERK_ACK_WAIT_S": "2", KEY_ENV: HASH_KEY})
    try:
        asyncio.run(running.start())
        yield running
    finally:
        running.stop()
        nats_process.terminate()
        nats_process.wait(timeout=5)


@pytest.fixture
def client(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key="sk-stellwerk-demo", max_retries=0,
                              timeout=60)


async def ask(client: openai.AsyncOpenAI, user: str, usecase: str = "chat", quality: str = "standard") -> str:
    """The request id of one answered chat request naming ``user``."""
    raw = await client.chat.completions.with_raw_response.create(
        model="stellwerk", messages=[{"role": "user", "content": "Wie ist der Stand der Schadensmeldung?"}],
        user=user, extra_headers={"X-Stellwerk-Usecase-Class": usecase, "X-Stellwerk-Quality-Tier": quality},
    )
    return raw.headers["x-stellwerk-request-id"]


async def usage_events(nc: Client) -> list[UsageRecorded]:
    found = []
    for data in await stored(nc.jetstream(), subjects.USAGE_RECORDED):
        try:
            found.append(decode(data, UsageRecorded))
        except (ValueError, msgspec.MsgspecError):
            continue
    return found


async def test_the_end_user_is_in_every_audit_record_and_usage_event_as_its_keyed_hash_only(
    client: openai.AsyncOpenAI, nc: Client
) -> None:
    person = f"alice-{uuid.uuid4().hex}@example.com"
    request_id = await ask(client, person)
    pseudonym = end_user_hash(TENANT, person, HASH_KEY)
    assert pseudonym != end_user_hash(TENANT, person, None)  # keyed: not the bare SHA-256 of the id
    js = nc.jetstream()

    async def records() -> list[object] | None:
        mine = [e for e in await audit_events(js) if e.request_id == request_id]
        return mine if {"gateway", "router", "inference", "dlp_output"} <= {e.stage for e in mine} else None

    trail = await eventually(records)
    assert all(e.end_user == pseudonym for e in trail), [(e.stage, e.end_user) for e in trail]  # type: ignore[attr-defined]

    async def usage() -> list[UsageRecorded] | None:
        return [u for u in await usage_events(nc) if u.request_id == request_id] or None

    booked = await eventually(usage)
    assert [u.end_user for u in booked] == [pseudonym]
    # The raw id is nowhere: not in the audit stream (events, trails, chained records), not in usage.
    for subject in (subjects.AUDIT_EVENTS, subjects.AUDIT_TRAILS, subjects.AUDIT_CHAIN_ALL,
                    subjects.USAGE_RECORDED):
        assert not any(person.encode() in data for data in await stored(js, subject)), subject



async def test_finops_reports_per_end_user(mesh: Mesh, client: openai.AsyncOpenAI) -> None:
    person = f"carol-{uuid.uuid4().hex}@example.com"
    for _ in range(2):
        await ask(client, person)
    pseudonym = end_user_hash(TENANT, person, HASH_KEY)

    def rows() -> dict[str, dict[str, object]]:
        result = subprocess.run(
            [sys.executable, "-m", "stellwerk", "finops", "report", "--by", "user", "--period", "today",
             "--format", "json", "--nats-url", mesh.url, "--config", str(mesh.config_file)],
            capture_output=True, text=True, timeout=60, check=True)
        return {row["key"]: row for row in json.loads(result.stdout)["rows"]}

    async def reported() -> dict[str, object] | None:
        return (await asyncio.to_thread(rows)).get(f"{TENANT}/{pseudonym}")

    row = await eventually(reported, timeout_s=20)
    assert row["requests"] == 2
    assert person not in json.dumps(await asyncio.to_thread(rows))


async def test_a_budget_scoped_to_one_end_user_blocks_only_that_end_user(client: openai.AsyncOpenAI) -> None:
    # High quality goes to the paid API route: one call spends the tiny budget.
    await ask(client, SPENDER, usecase="summarization", quality="high")

    async def blocked() -> openai.APIStatusError | None:
        try:
            await ask(client, SPENDER, usecase="summarization")
        except openai.APIStatusError as exc:
            return exc
        return None

    refusal = await eventually(blocked, timeout_s=30)
    assert refusal.status_code == 429
    assert isinstance(refusal.body, dict) and refusal.body["stellwerk"]["rule_id"] == "budget.block_noncritical"
    # Another person behind the same key, and the same person's critical use, are still served.
    assert await ask(client, f"dave-{uuid.uuid4().hex}", usecase="summarization")
    assert await ask(client, SPENDER, usecase="decision_support")
