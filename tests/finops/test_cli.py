"""``stellwerk finops report|budget|prices`` against a real nats-server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client
from typer.testing import CliRunner

from services.finops.cli import app
from tests.finops.conftest import finops_config, publish
from tests.finops.helpers import usage

NOW = datetime.now(UTC)


def run(nats_url: str, config: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env={"STELLWERK_NATS_URL": nats_url,
                                                      "STELLWERK_CONFIG_FILE": str(config), "COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return finops_config(tmp_path)


async def seed(nc: Client) -> None:
    js = nc.jetstream()
    api = [usage(n, usecase="chat", at=NOW) for n in range(2)]
    local = usage(9, usecase="coding", route="local-vllm", deployment="local-vllm-1", prompt=500, completion=500,
                  gpu_seconds=2.0, at=NOW)
    old = usage(7, usecase="chat", at=NOW - timedelta(days=62))
    await publish(js, [*api, local, old])
    await publish(js, api[:1], msg_ids=False)  # counted once


async def test_report_as_json_groups_prices_and_shares(nats_url: str, nc: Client, config: Path) -> None:
    await seed(nc)
    report = json.loads(await asyncio.to_thread(run, nats_url, config, "report", "--by", "usecase",
                                                "--format", "json"))
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["chat"]["requests"] == 2 and rows["chat"]["tokens"] == 4000
    assert rows["chat"]["cost"] == pytest.approx(2 * 0.01125)
    assert rows["chat"]["cost_per_1k_tokens"] == pytest.approx(0.005625)
    assert rows["coding"]["gpu_seconds"] == 2.0 and rows["coding"]["local_share"] == 1.0
    assert rows["coding"]["cost"] == pytest.approx(2 / 3600 * 2.90)
    total = report["total"]
    assert (total["requests"], total["tokens"]) == (3, 5000)
    assert total["local_share"] == pytest.approx(0.2) and total["api_share"] == pytest.approx(0.8)
    local = next(d for d in report["deployments"] if d["key"] == "local-vllm-1")
    assert local["gpu_seconds_per_1k_tokens"] == pytest.approx(2.0)
    assert {b["budget_id"] for b in report["budgets"]} == {"acme-tight", "claims-day"}
    acme = next(b for b in report["budgets"] if b["budget_id"] == "acme-tight")
    assert acme["consumed"] == pytest.approx(2 * 0.01125 + 2 / 3600 * 2.90, rel=1e-6)
    everything = json.loads(await asyncio.to_thread(run, nats_url, config, "report", "--period", "all",
                                                    "--by", "tenant", "--format", "json"))
    assert everything["total"]["requests"] == 4 and everything["rows"][0]["key"] == "acme"


async def test_report_as_csv_and_table(nats_url: str, nc: Client, config: Path) -> None:
    await seed(nc)
    text = await asyncio.to_thread(run, nats_url, config, "report", "--by", "route", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["route"] for r in rows] == ["api-gpt52", "local-vllm", "total"]
    assert rows[-1]["requests"] == "3"
    table = await asyncio.to_thread(run, nats_url, config, "report", "--by", "model", "--period", "today")
    assert "GPU-seconds per 1k tokens by deployment" in table and "acme-tight" in table and "█" in table


async def test_budget_set_list_and_bad_input(nats_url: str, nc: Client, config: Path) -> None:
    out = await asyncio.to_thread(run, nats_url, config, "budget", "set", "coding-month", "--scope", "usecase",
                                  "--scope-id", "coding", "--limit", "100", "--action", "block_noncritical")
    assert "coding-month" in out
    listed = json.loads(await asyncio.to_thread(run, nats_url, config, "budget", "list", "--format", "json"))
    [row] = [r for r in listed if r["definition"]["budget_id"] == "coding-month"]
    assert row["definition"]["source"] == "cli" and row["definition"]["action"] == "block_noncritical"
    await asyncio.to_thread(run, nats_url, config, "budget", "set", "x", "--scope", "usecase", "--scope-id",
                            "poetry", "--limit", "1", code=2)
    await asyncio.to_thread(run, nats_url, config, "budget", "set", "x y", "--scope", "tenant", "--scope-id",
                            "acme", "--limit", "1", code=2)
    await asyncio.to_thread(run, nats_url, config, "budget", "reset", "no-such-budget", code=1)


def test_prices_command_shows_the_formula_and_the_cross_check(config: Path) -> None:
    out = run("nats://127.0.0.1:1", config, "prices")
    assert "2.9000" in out and "gpt-5.2" in out and "-16.9 %" in out


def test_an_unknown_period_is_refused(config: Path) -> None:
    out = run("nats://127.0.0.1:1", config, "report", "--period", "fortnight", code=2)
    assert "unknown period" in out


async def test_an_end_user_budget_takes_the_id_from_stdin_and_stores_only_its_pseudonym(
    nats_url: str, nc: Client, config: Path
) -> None:
    from services.kernel.end_user import end_user_hash

    env = {"STELLWERK_NATS_URL": nats_url, "STELLWERK_CONFIG_FILE": str(config), "COLUMNS": "200"}
    args = ["budget", "set", "bob-cap", "--scope", "end_user", "--end-user", "-", "--tenant", "acme",
            "--limit", "5", "--action", "block_noncritical", "--actor", "alice"]
    result = await asyncio.to_thread(CliRunner().invoke, app, args, input="bob@example.org\n", env=env)
    assert result.exit_code == 0, result.output
    listed = json.loads(await asyncio.to_thread(run, nats_url, config, "budget", "list", "--format", "json"))
    [row] = [r for r in listed if r["definition"]["budget_id"] == "bob-cap"]
    assert row["definition"]["scope_id"] == end_user_hash("acme", "bob@example.org", None)
    assert "bob@example.org" not in json.dumps(listed)
    empty = await asyncio.to_thread(CliRunner().invoke, app, args, input="\n", env=env)
    assert empty.exit_code == 2
