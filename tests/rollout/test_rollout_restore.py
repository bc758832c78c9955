"""``stellwerk rollout restore`` is a compare-and-set (review 1i): of concurrent restores of one
rolled-back variant exactly one deletes the key and audits, and a restore that read an older
rollback never deletes a newer one. Against a real nats-server."""

from __future__ import annotations

import asyncio

import msgspec
from nats.js.errors import KeyNotFoundError

from schemas import subjects
from schemas.events import AuditEvent, decode
from schemas.kv import RolloutState
from schemas.streams import KV_ROLLOUTS
from services.runtime.bus import connect, ensure_topology
from stellwerk.rollout_cli import _restore, delete_unchanged
from tests.integration.mesh import stored

KEY = "local-vllm.canary"


def rolled_back(reason: str = "error_rate") -> bytes:
    return msgspec.json.encode(RolloutState(route="local-vllm", variant="canary", actor="system", reason=reason))


async def test_concurrent_restores_have_one_winner_and_one_audit(nats_url: str) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        kv = await js.key_value(KV_ROLLOUTS)
        first = await kv.put(KEY, rolled_back())

        # A restore that read the rollback, then lost the race: its delete must not land.
        assert await _restore(nats_url, "local-vllm", "canary", "alice") is True
        assert await delete_unchanged(kv, KEY, first) is False

        # A new rollback after a stale read: the stale restore leaves it in force.
        await kv.put(KEY, rolled_back("p95_latency"))
        assert await delete_unchanged(kv, KEY, first) is False
        entry = await kv.get(KEY)
        assert entry.value and msgspec.json.decode(entry.value, type=RolloutState).reason == "p95_latency"

        # Many restores at once: one wins, one audit.
        results = await asyncio.gather(*(_restore(nats_url, "local-vllm", "canary", f"op{i}") for i in range(6)))
        assert sorted(results) == [False] * 5 + [True]
        try:
            gone = await kv.get(KEY)
            assert not gone.value
        except KeyNotFoundError:
            pass
        audits = [decode(d, AuditEvent) for d in await stored(js, subjects.audit("policy"))]
        assert [e.outcome for e in audits] == ["variant_restored", "variant_restored"]
    finally:
        await nc.close()
