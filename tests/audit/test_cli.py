"""``stellwerk audit`` against a real nats-server: verify (stream, copies, files), show,
replay, export — and tampering with a copy of the stream is detected."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner, Result

from schemas import subjects
from schemas.events import AuditRecord
from schemas.streams import AUDIT
from services.audit.appender import Appender
from services.audit.checkpoint import SealKey
from services.audit.cli import app
from services.audit.metrics import AuditMetrics
from services.audit.reader import scan
from services.audit.stored import StoredMsg
from services.runtime.bus import connect, ensure_topology
from tests.audit.helpers import event

SECRET = "cli-test-seal-key"
STORY = ("gateway", "dlp_input", "router", "inference", "dlp_output")


@dataclass
class Trail:
    url: str
    t1: datetime  # between the first and second third of the trail
    t2: datetime  # between the second and last third
    counts: dict[str, int]


async def _build(url: str) -> Trail:
    nc = await connect(url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)
    appender = Appender(nc, js, stream=AUDIT.name, metrics=AuditMetrics(), sealed_by="test",
                        key=SealKey.from_secret(SECRET), checkpoint_every=50)
    counts = {"acme-insurance": 0, "beta": 0}
    marks = []
    for third in range(3):
        for tenant, n in (("acme-insurance", 120), ("beta", 60)):
            await appender.append(tenant, [event(third * 1000 + i, tenant=tenant) for i in range(n)])
            counts[tenant] += n
        if third == 1:  # one request's story, chained out of order (stages publish concurrently)
            start = datetime.now(UTC)
            story = [event(0, tenant="acme-insurance", stage=stage, outcome="ok", request_id="req-story",
                           occurred_at=start + timedelta(milliseconds=7 * i)) for i, stage in enumerate(STORY)]
            await appender.append("acme-insurance", random.Random(1).sample(story, len(story)))
            counts["acme-insurance"] += len(story)
        await appender.seal_grown()  # the timed checkpoint: covers the newest records
        await asyncio.sleep(1.1)
        marks.append(datetime.now(UTC))
        await asyncio.sleep(0.1)
    await nc.close()
    return Trail(url, marks[0], marks[1], counts)


@pytest.fixture
def trail(nats_url: str) -> Trail:
    return asyncio.run(_build(nats_url))


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_AUDIT_SEAL_KEY", SECRET)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "220"})


def verify_json(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = cli("verify", "--format", "json", *args)
    return result.exit_code, json.loads(result.stdout)


def first_break(report: dict, partition: str) -> tuple[int, str] | None:  # type: ignore[type-arg]
    found = next(p for p in report["partitions"] if p["partition"] == partition)["first_break"]
    return None if found is None else (found["seq"], found["problem"])


Tamper = Callable[[StoredMsg], bytes | None]  # new payload, or None to leave the message out


async def _copy(url: str, name: str, tamper: Tamper) -> None:
    """Re-publish AUDIT, in order, into stream ``name`` under the same subjects (via a
    subject transform), changing or leaving out what ``tamper`` says."""
    from nats.js.api import StreamConfig, SubjectTransform

    nc = await connect(url, "test", persistent=False)
    js = nc.jetstream()
    prefix = name.lower()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.stellwerk.>"],
                                     subject_transform=SubjectTransform(src=f"{prefix}.stellwerk.>", dest="stellwerk.>")))
    stored: list[StoredMsg] = []
    await scan(js, AUDIT.name, subjects.AUDIT_ALL, lambda m: stored.append(m) is None)
    for msg in stored:
        data = tamper(msg)
        if data is not None:
            await js.publish(f"{prefix}.{msg.subject}", data)
    await nc.close()


def _is_record(msg: StoredMsg, partition: str, seq: int) -> bool:
    if msg.subject != subjects.audit_chain(partition):
        return False
    return msgspec.json.decode(msg.data, type=AuditRecord).seq == seq


def test_verify_the_stream(trail: Trail, with_key: None) -> None:
    result = cli("verify", "--nats-url", trail.url)
    assert result.exit_code == 0, result.output
    assert "intact" in result.output and "acme-insurance" in result.output
    code, report = verify_json("--nats-url", trail.url)
    assert code == 0 and report["ok"] and report["unverifiable_seals"] == 0
    assert {p["partition"]: p["records"] for p in report["partitions"]} == trail.counts


def test_verify_without_the_key_says_seals_were_not_checked(trail: Trail) -> None:
    code, report = verify_json("--nats-url", trail.url)
    assert code == 0 and report["unverifiable_seals"] == report["checkpoints"] > 0


def test_verify_since_starts_at_a_checkpoint(trail: Trail, with_key: None) -> None:
    code, report = verify_json("--nats-url", trail.url, "--since", trail.t2.isoformat())
    assert code == 0
    acme = next(p for p in report["partitions"] if p["partition"] == "acme-insurance")
    assert acme["anchored_at"] > 0 and acme["records"] < trail.counts["acme-insurance"]
    assert acme["last_seq"] == trail.counts["acme-insurance"]
    code, report = verify_json("--nats-url", trail.url, "--partition", "beta")
    assert code == 0 and [p["partition"] for p in report["partitions"]] == ["beta"]


@pytest.mark.parametrize(
    ("name", "tamper", "expected"),
    [
        ("ALTERED", lambda m: m.data.replace(b'"outcome":"routed"', b'"outcome":"allowed"')
            if _is_record(m, "acme-insurance", 30) else m.data, (30, "hash_mismatch")),
        ("REMOVED", lambda m: None if _is_record(m, "acme-insurance", 40) else m.data, (40, "missing_record")),
        ("FORGED", lambda m: m.data.replace(b'"outcome":"routed"', b'"outcome":"routed to a person"')
            if _is_record(m, "acme-insurance", 50) else m.data, (50, "malformed_record")),
        ("TRUNCATED", lambda m: None if m.subject == subjects.audit_chain("acme-insurance")
            and msgspec.json.decode(m.data, type=AuditRecord).seq > 360 else m.data, (361, "missing_record")),
    ],
    ids=["altered", "removed", "malformed", "truncated"],
)
def test_tampering_with_a_copy_is_detected(trail: Trail, with_key: None, name: str, tamper: Tamper,
                                           expected: tuple[int, str]) -> None:
    asyncio.run(_copy(trail.url, name, tamper))
    code, report = verify_json("--nats-url", trail.url, "--stream", name)
    assert code == 1 and not report["ok"]
    assert first_break(report, "acme-insurance") == expected
    assert first_break(report, "beta") is None
    untouched = asyncio.run(_copy(trail.url, "FAITHFUL", lambda m: m.data))
    assert untouched is None and verify_json("--nats-url", trail.url, "--stream", "FAITHFUL")[0] == 0


def test_a_record_deleted_from_a_mirror_is_detected(trail: Trail, with_key: None) -> None:
    async def mirror_then_delete() -> None:
        from nats.js.api import StreamConfig, StreamSource

        nc = await connect(trail.url, "test", persistent=False)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="MIRROR", mirror=StreamSource(name=AUDIT.name)))
        last = (await js.stream_info(AUDIT.name)).state.last_seq
        while (await js.stream_info("MIRROR")).state.last_seq < last:
            await asyncio.sleep(0.05)
        stored: list[StoredMsg] = []
        await scan(js, "MIRROR", subjects.audit_chain("beta"), lambda m: stored.append(m) is None)
        await js.delete_msg("MIRROR", stored[9].seq)
        await nc.close()

    assert verify_json("--nats-url", trail.url, "--stream", AUDIT.name)[0] == 0
    asyncio.run(mirror_then_delete())
    code, report = verify_json("--nats-url", trail.url, "--stream", "MIRROR")
    assert code == 1 and first_break(report, "beta") == (10, "missing_record")


def test_export_verifies_on_its_own_and_a_changed_line_is_caught(trail: Trail, with_key: None, tmp_path: Path) -> None:
    path = tmp_path / "evidence.jsonl"
    result = cli("export", str(path), "--since", trail.t1.isoformat(), "--until", trail.t2.isoformat(),
                 "--nats-url", trail.url)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = {line["kind"] for line in lines}
    assert kinds == {"record", "checkpoint"}
    records = [line for line in lines if line["kind"] == "record"]
    assert len(records) < sum(trail.counts.values()), "a window, not the whole trail"
    code, report = verify_json("--file", str(path))
    assert code == 0, report
    assert all(p["anchored_at"] > 0 for p in report["partitions"]), "each partition starts at a checkpoint"
    text = path.read_text()
    changed = text.replace('"outcome":"routed"', '"outcome":"refused"', 1)
    assert changed != text
    path.write_text(changed)
    assert verify_json("--file", str(path))[0] == 1
    path.write_text(text.replace("\n", "\n{not json\n", 1))
    broken = cli("verify", "--file", str(path))
    assert broken.exit_code == 1 and "not an audit export" in broken.output


def test_parquet_export(trail: Trail, with_key: None, tmp_path: Path) -> None:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    path = tmp_path / "evidence.parquet"
    result = cli("export", str(path), "--since", "1d", "--until", datetime.now(UTC).isoformat(), "--parquet",
                 "--tenant", "beta", "--nats-url", trail.url)
    assert result.exit_code == 0, result.output
    table = pq.read_table(path)
    assert set(table.column("tenant").to_pylist()) <= {"beta", None}
    assert table.column("kind").to_pylist().count("record") == trail.counts["beta"]
    code, report = verify_json("--file", str(path))
    assert code == 0 and [p["partition"] for p in report["partitions"]] == ["beta"]


def test_replay_by_tenant_time_and_subject(trail: Trail) -> None:
    every = cli("replay", "--nats-url", trail.url)
    assert every.exit_code == 0
    assert len(every.stdout.splitlines()) == sum(trail.counts.values())
    beta = cli("replay", "--tenant", "beta", "--nats-url", trail.url).stdout.splitlines()
    assert len(beta) == trail.counts["beta"]
    assert all(json.loads(line)["data"]["event"]["tenant"] == "beta" for line in beta)
    window = cli("replay", "--since", trail.t1.isoformat(), "--until", trail.t2.isoformat(), "--nats-url", trail.url)
    stored = [json.loads(line) for line in window.stdout.splitlines()]
    assert len(stored) == 185, "the middle third: 120 + 60 records and the five-stage story"
    assert all(trail.t1 <= datetime.fromisoformat(s["time"]) <= trail.t2 for s in stored)
    checkpoints = cli("replay", "--subject", "checkpoints", "--tenant", "beta", "--nats-url", trail.url)
    assert {json.loads(line)["kind"] for line in checkpoints.stdout.splitlines()} == {"checkpoint"}
    table = cli("replay", "--tenant", "beta", "--since", trail.t2.isoformat(), "--format", "table", "--nats-url", trail.url)
    assert table.exit_code == 0 and "beta#" in table.stdout


def test_show_tells_a_request_in_order(trail: Trail) -> None:
    result = cli("show", "req-story", "--nats-url", trail.url)
    assert result.exit_code == 0, result.output
    positions = [result.stdout.index(f" {stage} ") for stage in STORY]
    assert positions == sorted(positions), "stages in the order they happened, not the order chained"
    lines = cli("show", "req-story", "--format", "jsonl", "--tenant", "acme-insurance", "--nats-url", trail.url)
    assert [json.loads(line)["event"]["stage"] for line in lines.stdout.splitlines()] == list(STORY)
    missing = cli("show", "no-such-request", "--nats-url", trail.url)
    assert missing.exit_code == 1
