"""Shared test plumbing for the simulator tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.simulator import SimulatorSettings, create_app

MODEL = "stellwerk-local-llama"


@asynccontextmanager
async def simulator_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SimulatorSettings(**overrides))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as client:
        yield client


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(body: str) -> list[str]:
    events = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert all(not line.startswith("data:") for line in events)
    return events


def metric(text: str, sample_name: str, **labels: str) -> float:
    """Value of one sample in Prometheus text exposition (model_name defaults to the test model)."""
    wanted = {"model_name": MODEL, **labels}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {sample_name} {wanted}")
