"""The topology is declared in one place (``ensure_topology``), and operator settings are
applied only by a process that has them: a CLI run cannot reset the AUDIT retention."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from schemas.streams import AUDIT, DAY
from services.runtime.bus import connect, ensure_topology
from services.runtime.settings import MeshSettings


async def audit_max_age_days(url: str) -> float:
    nc = await connect(url, "probe", persistent=False)
    try:
        info = await nc.jetstream().stream_info(AUDIT.name)
    finally:
        await nc.close()
    assert info.config.max_age is not None
    return round(info.config.max_age / DAY, 3)


async def test_a_process_without_the_setting_keeps_the_audit_retention(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STELLWERK_AUDIT_RETENTION_DAYS", raising=False)
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)  # a fresh mesh: the definition's default
    assert await audit_max_age_days(nats_url) == round(AUDIT.max_age_s / DAY, 3)

    await ensure_topology(js, MeshSettings(audit_retention_days=30))  # the workers' setting
    assert await audit_max_age_days(nats_url) == 30
    await ensure_topology(js)  # a process without it (the gateway's or a CLI's default settings)
    assert await audit_max_age_days(nats_url) == 30
    await ensure_topology(js, MeshSettings(audit_retention_days=60))  # an operator's change applies
    assert await audit_max_age_days(nats_url) == 60
    await nc.close()

    # The real CLI, which declares the topology before it reads budgets, changes nothing.
    env = {k: v for k, v in os.environ.items() if k != "STELLWERK_AUDIT_RETENTION_DAYS"}
    run = subprocess.run(
        [sys.executable, "-m", "stellwerk", "finops", "budget", "list", "--nats-url", nats_url, "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert await audit_max_age_days(nats_url) == 60
