"""Gateway rate limits: the GCRA core, the KV adapter shared by replicas, two real gateways."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml

from schemas.events import ChatMessage
from schemas.streams import KV_RATELIMITS
from services.gateway.ratelimit import Check, KvRateLimiter, decide, estimate_tokens, lease_size, plan
from services.gateway.settings import RateLimits
from services.kernel.gcra import LimitState, Rate, gcra, refund
from services.kernel.limit_spec import LimitSpec
from services.runtime.bus import connect, ensure_topology
from services.runtime.settings import DEFAULT_CONFIG, ApiKey
from stellwerk.supervisor import free_port
from tests.integration.mesh import eventually

KEY = ApiKey(key_id="demo-claims", key_sha256="0" * 64, tenant="acme-insurance", business_unit="claims",
             user_role="analyst")


def test_gcra_admits_a_window_at_once_then_one_per_interval() -> None:
    rate = Rate(limit=5, per_s=60)  # one every 12 s, five at once
    tat, now = 0.0, 1000.0
    for _ in range(5):
        verdict = gcra(tat, now, 1, rate)
        assert verdict.allowed
        tat = verdict.tat
    refused = gcra(tat, now, 1, rate)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(12.0) and refused.tat == tat
    assert gcra(tat, now + 11.9, 1, rate).allowed is False
    assert gcra(tat, now + 12.0, 1, rate).allowed is True
    assert gcra(tat, now + 600, 1, rate).remaining == pytest.approx(4.0)  # idle: the full window back


def test_gcra_charges_tokens_by_weight_and_refuses_what_can_never_fit() -> None:
    rate = Rate(limit=1000, per_s=60)
    verdict = gcra(0.0, 0.0, 700, rate)
    assert verdict.allowed and verdict.remaining == pytest.approx(300)
    later = gcra(verdict.tat, 0.0, 400, rate)
    assert not later.allowed and later.retry_after_s == pytest.approx(6.0)  # 100 tokens at 0.06 s each
    too_large = gcra(0.0, 0.0, 1001, rate)
    assert not too_large.allowed and too_large.too_large and too_large.retry_after_s == 60
    assert refund(verdict.tat, 0.0, 700, rate) == 0.0


def test_a_document_admits_only_if_all_its_limits_do() -> None:
    checks = [Check("user", "k", "requests", Rate(100, 60), 1), Check("user", "k", "tokens", Rate(1000, 60), 900)]
    state, refusal = decide(LimitState(), checks, now=0.0)
    assert refusal is None and set(state.tat) == {"requests", "tokens"}
    again, refusal = decide(state, checks, now=0.0)
    assert refusal is not None and refusal.name == "user.tokens" and again is state


def test_plan_picks_overrides_then_defaults() -> None:
    limits = RateLimits(
        users={"demo-claims": LimitSpec(requests=10), "*": LimitSpec(requests=100)},
        teams={"claims": LimitSpec(tokens=5000, per_s=3600)},
        endpoints={"*": LimitSpec(tokens=1e6)},
    )
    docs = plan(limits, KEY, "stellwerk", tokens=600)
    assert set(docs) == {"user.demo-claims", "team.acme-insurance.claims", "endpoint.stellwerk"}
    assert docs["user.demo-claims"][0].rate == Rate(10, 60)
    assert docs["team.acme-insurance.claims"][0].cost == 600
    assert plan(RateLimits(), KEY, "stellwerk", 1) == {}


def test_token_estimate_is_prompt_characters_plus_the_answers_allowance() -> None:
    messages = [ChatMessage(role="user", content="x" * 400)]
    assert estimate_tokens(messages, 50, 512) == 104 + 50
    assert estimate_tokens(messages, None, 512) == 104 + 512


async def test_two_replicas_share_one_limit_through_kv(nats_url: str) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)
    kv = await js.key_value(KV_RATELIMITS)
    limits = RateLimits(users={"*": LimitSpec(requests=7, per_s=60)}, teams={"*": LimitSpec(tokens=10_000)})
    clock = lambda: 5_000.0  # noqa: E731 - a frozen clock: no refill during the test
    replicas = [KvRateLimiter(kv, limits, clock=clock), KvRateLimiter(kv, limits, clock=clock)]
    outcomes = await asyncio.gather(*(replicas[i % 2].admit(KEY, "stellwerk", tokens=100) for i in range(20)))
    admitted = [o for o in outcomes if o is None]
    assert len(admitted) == 7
    assert all(o.name == "user.requests" and o.retry_after_s > 0 for o in outcomes if o is not None)
    # The refused requests were not charged to the team: 7 × 100 tokens only, once what the
    # replicas reserved beyond their requests (leases) has gone back.
    await asyncio.gather(*(r.aclose() for r in replicas))
    team = msgspec.json.decode((await kv.get("team.acme-insurance.claims")).value or b"", type=LimitState)
    assert team.tat["tokens"] == pytest.approx(5_000.0 + 700 * 60 / 10_000)
    await nc.close()


def test_a_lease_is_a_share_of_the_allowance_above_the_floor_and_none_near_the_limit() -> None:
    check = Check("user", "k", "requests", Rate(1000, 60), 1)
    assert lease_size(LimitState(), check, 100.0) == 50  # 5 % of 1,000
    # 150 left (of 1,000): only what lies above 200 could be leased — nothing
    nearly_used = LimitState(tat={"requests": 100.0 + (1000 - 150) * 60 / 1000})
    assert lease_size(nearly_used, check, 100.0) == 0
    assert lease_size(LimitState(), Check("user", "k", "requests", Rate(6, 3600), 1), 100.0) == 0  # < 1 unit


async def test_leases_spare_kv_writes_and_two_replicas_never_admit_more_than_the_limit(nats_url: str) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)
    kv = await js.key_value(KV_RATELIMITS)
    limits = RateLimits(endpoints={"*": LimitSpec(requests=400, per_s=3600)})
    clock = lambda: 9_000.0  # noqa: E731 - frozen: no refill
    replicas = [KvRateLimiter(kv, limits, clock=clock), KvRateLimiter(kv, limits, clock=clock)]
    # A document charged once (not in steady use) gets no lease: KV holds exactly that request.
    sparse = "sparse-" + str(os.getpid())
    assert await replicas[0].admit(KEY, sparse, tokens=1) is None
    once = msgspec.json.decode((await kv.get(f"endpoint.{sparse}")).value or b"", type=LimitState)
    assert once.tat["requests"] == pytest.approx(9_000.0 + 3600 / 400)
    endpoint = "leases-" + str(os.getpid())
    before = (await js.stream_info("KV_" + KV_RATELIMITS)).state.last_seq
    outcomes = await asyncio.gather(*(replicas[i % 2].admit(KEY, endpoint, tokens=1) for i in range(600)))
    writes = (await js.stream_info("KV_" + KV_RATELIMITS)).state.last_seq - before
    admitted = sum(o is None for o in outcomes)
    # Never more than the limit; at most the two replicas' last leases (20 each) unused.
    assert 400 - 2 * 20 <= admitted <= 400
    # Far fewer KV writes than admissions: leases while the allowance was plentiful, one
    # write per request only in the last 20 % (80 requests) and for refusals' re-reads.
    assert writes < admitted / 2
    await asyncio.gather(*(r.aclose() for r in replicas))
    state = msgspec.json.decode((await kv.get(f"endpoint.{endpoint}")).value or b"", type=LimitState)
    # What was reserved and not used went back: the document holds exactly what was admitted.
    assert state.tat["requests"] == pytest.approx(9_000.0 + admitted * 3600 / 400)
    await nc.close()


# --- two real gateway processes ----------------------------------------------------------------


@pytest.fixture
def two_gateways(nats_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Gateways]:
    """Two gateway processes on one NATS server; ``request.param``: requests per hour per key
    (default six: no refill while the test runs, whatever the machine's speed)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    per_hour = getattr(request, "param", 6)
    config["rate_limits"] = {"users": {"*": {"requests": per_hour, "per_s": 3600}}}
    path = tmp_path / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "STELLWERK_NATS_URL": nats_url, "STELLWERK_CONFIG_FILE": str(path)}
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen([sys.executable, "-m", "services.gateway", "--port", str(port)], env=env,
                         stdout=(tmp_path / f"gateway-{port}.log").open("wb"), stderr=subprocess.STDOUT)
        for port in ports
    ]
    yield Gateways([f"http://127.0.0.1:{port}" for port in ports], processes)
    stop(processes)


@dataclass
class Gateways:
    urls: list[str]
    processes: list[subprocess.Popen[bytes]]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()  # a graceful stop: the gateway gives back what it leased
    for p in processes:
        p.wait(timeout=15)


async def _ready(http: httpx.AsyncClient, urls: list[str]) -> None:
    async def ready() -> bool:
        try:
            return all([(await http.get(f"{u}/healthz")).status_code == 200 for u in urls])
        except httpx.HTTPError:
            return False

    await eventually(ready, timeout_s=60)


async def test_limits_hold_across_two_gateway_replicas(two_gateways: Gateways) -> None:
    urls = two_gateways.urls
    async with httpx.AsyncClient(timeout=10) as http:
        await _ready(http, urls)
        # No pipeline runs behind the gateways: an admitted request times out (504) quickly.
        headers = {"Authorization": "Bearer sk-stellwerk-demo", "X-Stellwerk-Timeout": "0.3"}
        body = {"model": "stellwerk", "messages": [{"role": "user", "content": "hello"}]}
        responses = await asyncio.gather(*(
            http.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=headers) for i in range(14)
        ))
    refused = [r for r in responses if r.status_code == 429]
    assert len(responses) - len(refused) == 6, [r.status_code for r in responses]
    assert {r.status_code for r in responses} == {429, 504}
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        error = r.json()["error"]
        assert error["code"] == "rate_limited" and error["stellwerk"]["limit"] == "user.requests"
    assert len({str(r.request.url) for r in refused}) == 2, "both replicas refused"


@pytest.mark.parametrize("two_gateways", [200], indirect=True)
async def test_two_gateway_processes_with_leases_never_admit_more_than_the_limit(
    two_gateways: Gateways, nats_url: str,
) -> None:
    urls = two_gateways.urls
    started = time.time()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=400)) as http:
        await _ready(http, urls)
        headers = {"Authorization": "Bearer sk-stellwerk-demo", "X-Stellwerk-Timeout": "0.3"}
        body = {"model": "stellwerk", "messages": [{"role": "user", "content": "hello"}]}
        responses = await asyncio.gather(*(
            http.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=headers) for i in range(260)
        ))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {429, 504}, statuses
    admitted = statuses.count(504)  # admitted, then no pipeline behind the gateways
    # Never more than 200; at most each replica's last lease (5 % = 10) held back.
    assert 200 - 2 * 10 <= admitted <= 200
    # What the gateways leased and did not use has gone back (after a second unused, or at the
    # latest at their graceful stop): the document holds the admitted requests only (18 s of
    # allowance each, from the start); unreturned leases would add 180 s per replica.
    nc = await connect(nats_url, "test", persistent=False)
    kv = await nc.jetstream().key_value(KV_RATELIMITS)
    stop(two_gateways.processes)
    [user_doc] = [k for k in await kv.keys() if k.startswith("user.")]
    state = msgspec.json.decode((await kv.get(user_doc)).value or b"", type=LimitState)
    assert abs(state.tat["requests"] - (started + admitted * 18)) < 60
    await nc.close()
