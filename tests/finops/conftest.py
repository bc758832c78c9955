"""FinOps workers as real processes against the real nats-server of ``nats_url``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
import yaml
from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import subjects
from schemas.events import UsageRecorded, encode
from schemas.streams import FINOPS_USAGE, KV_BUDGETS
from services.finops.ledger import StateDoc, Totals
from services.runtime.bus import connect, ensure_topology
from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.discovery import ping_workers
from tests.integration.mesh import eventually, stored

# Budgets the worker tests run against (prices: the default table; an API call of 1k + 1k
# tokens costs 0.01125 EUR).
BUDGETS = [
    {"id": "acme-tight", "scope": "tenant", "scope_id": "acme", "period": "month", "limit": 0.05,
     "action": "downgrade"},
    {"id": "claims-day", "scope": "business_unit", "scope_id": "claims", "period": "day", "limit": 1000,
     "action": "force_local"},
]


def finops_config(directory: Path, **overrides: Any) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["budgets"] = BUDGETS
    config["finops_timezone"] = "UTC"
    config.update(overrides)
    path = directory / "finops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Workers:
    def __init__(self, url: str, config: Path, logs: Path) -> None:
        self.url, self.config, self.logs = url, config, logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ, "STELLWERK_NATS_URL": self.url, "STELLWERK_CONFIG_FILE": str(self.config),
            "STELLWERK_ACK_WAIT_S": "2", "STELLWERK_WORKER_ID": name, **env,
        }
        process = subprocess.Popen([sys.executable, "-m", "services.finops"], env=environment,
                                   stdout=(self.logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=15)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    async def ready(self, nc: Client, count: int) -> None:
        async def enough() -> bool:
            return len((await ping_workers(nc, 0.2)).get("finops", [])) >= count

        await eventually(enough, timeout_s=60)


@pytest.fixture
def workers(nats_url: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(nats_url, finops_config(tmp_path), tmp_path)
    yield group
    group.stop_all()


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, "test", persistent=False)
    await ensure_topology(client.jetstream())
    yield client
    await client.close()


async def publish(js: JetStreamContext, events: list[UsageRecorded], *, msg_ids: bool = True) -> None:
    for event in events:
        headers = {"Nats-Msg-Id": f"usage:{event.call_id}"} if msg_ids else None
        await js.publish(subjects.USAGE_RECORDED, encode(event), headers=headers)


async def settled(js: JetStreamContext, timeout_s: float = 60) -> None:
    """Every usage event delivered and acked by the finops consumer."""

    async def done() -> bool:
        try:
            info = await js.consumer_info(FINOPS_USAGE.stream, FINOPS_USAGE.durable)
        except Exception:  # noqa: BLE001 - not created yet
            return False
        return (info.num_pending, info.num_ack_pending) == (0, 0) and bool(info.delivered.stream_seq)

    await eventually(done, timeout_s=timeout_s)


async def kv_totals(js: JetStreamContext, key: str) -> Totals:
    kv = await js.key_value(KV_BUDGETS)
    return msgspec.json.decode((await kv.get(f"totals.{key}")).value or b"", type=Totals)


async def kv_state(js: JetStreamContext, key: str) -> StateDoc | None:
    kv = await js.key_value(KV_BUDGETS)
    try:
        return msgspec.json.decode((await kv.get(f"state.{key}")).value or b"", type=StateDoc)
    except Exception:  # noqa: BLE001 - absent
        return None


async def read_all(js: JetStreamContext, subject: str, decode: Callable[[bytes], Any]) -> list[Any]:
    return [decode(data) for data in await stored(js, subject, idle_s=0.5)]
