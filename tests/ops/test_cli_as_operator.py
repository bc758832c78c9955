"""Operators' commands work with the ``operator`` NATS user against the secured cluster."""

from __future__ import annotations

import pytest

from services.audit.trail import verify_stream
from services.runtime.bus import connect
from stellwerk.status import collect_status
from tests.ops.conftest import OpsMesh


@pytest.fixture
def as_operator(ops_mesh: OpsMesh, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in ops_mesh.cluster.user_env("operator").items():
        monkeypatch.setenv(key, value)
    return ops_mesh.cluster.url


async def test_stellwerk_status_sees_every_service_and_consumer(as_operator: str) -> None:
    report = await collect_status(as_operator)
    assert {"dlp", "router", "inference", "finops", "audit", "toolgateway"} <= set(report["workers"])
    assert {c["consumer"] for c in report["consumers"]} >= {"dlp-input", "router", "inference", "dlp-output",
                                                            "finops", "audit"}


async def test_audit_verify_reads_the_chain(as_operator: str) -> None:
    nc = await connect(as_operator, "test-audit-verify", persistent=False)
    try:
        report = await verify_stream(nc.jetstream(), "AUDIT")
    finally:
        await nc.close()
    assert report.ok
