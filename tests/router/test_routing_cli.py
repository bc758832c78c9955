"""`stellwerk route explain` (as mounted under a parent app) and the push helper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from services.router.cli import app, push
from services.runtime.rego import PolicyError, read_policy_dir

runner = CliRunner()
BASE = {"data_sensitivity": "internal", "usecase_class": "chat", "tenant": "acme",
        "business_unit": "claims", "user_role": "analyst"}


def _explain(stdin: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["explain", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_explain_prints_the_decision(policy_dir: Path) -> None:
    code, out, _ = _explain(json.dumps({**BASE, "quality_tier": "high"}), "--policy-dir", str(policy_dir))
    assert code == 0
    assert json.loads(out) == {
        "route": "api-gpt52",
        "rule_id": "quality.high",
        "policy_version": read_policy_dir(policy_dir).version,
        "fallbacks": ["local-vllm"],
    }


def test_explain_uses_runtime_signals_from_the_input() -> None:
    signals = {"local_capacity_ok": True, "api_quota_remaining": 0, "provider_health": {},
               "budget_exhausted": False}
    code, out, _ = _explain(json.dumps({**BASE, "context_length_bucket": ">32k", "runtime_signals": signals}))
    assert code == 0
    assert json.loads(out)["rule_id"] == "context.too_long.api_unavailable"


def test_explain_jsonl_echoes_ids_and_reports_bad_lines() -> None:
    lines = [
        json.dumps({"id": "a", **BASE, "data_sensitivity": "highly_confidential"}),
        "",
        json.dumps({"id": 7, **BASE, "budget_class": "low"}),
        json.dumps({"id": "bad", **BASE, "quality_tier": "ultra"}),
        "[1, 2]",
    ]
    code, out, _ = _explain("\n".join(lines) + "\n", "--jsonl")
    answers = [json.loads(line) for line in out.splitlines()]
    assert [(a["id"], a.get("rule_id")) for a in answers] == [
        ("a", "sensitivity.local_only"), (7, "budget.low"), ("bad", None), (None, None)]
    assert answers[2]["error"] == "invalid_input" and "quality_tier" in answers[2]["detail"]
    assert set(answers[0]) == {"id", "route", "rule_id", "policy_version", "fallbacks"}
    assert code == 1


@pytest.mark.parametrize(
    "stdin",
    [
        "{",  # not JSON
        json.dumps({**BASE, "qualty_tier": "high"}),  # misspelt attribute
        json.dumps({k: v for k, v in BASE.items() if k != "data_sensitivity"}),  # no sensitivity
    ],
)
def test_explain_rejects_invalid_input(stdin: str) -> None:
    code, out, err = _explain(stdin)
    assert (code, out) == (2, "")
    assert "invalid routing input" in err


def test_explain_fails_closed_on_a_broken_policy(policy_dir: Path) -> None:
    (policy_dir / "routing.rego").write_text("package stellwerk.routing\ndecision := {\n")
    code, out, err = _explain(json.dumps(BASE), "--policy-dir", str(policy_dir))
    assert (code, out) == (1, "")
    assert "routing policy unavailable" in err


def test_explain_mounts_as_a_subcommand() -> None:
    stellwerk = typer.Typer()

    @stellwerk.command()
    def version() -> None: ...

    stellwerk.add_typer(app, name="route")
    result = runner.invoke(stellwerk, ["route", "explain"], input=json.dumps(BASE))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rule_id"] == "default.local_first"


def test_push_returns_the_checked_source(policy_dir: Path) -> None:
    source = push(policy_dir)
    assert source.version == read_policy_dir(policy_dir).version
    assert set(source.modules) == {"routing.rego"}
    assert source.data["routing"]["class_order"]["chat"][0] == "standard"


def test_push_refuses_a_policy_that_does_not_compile(policy_dir: Path) -> None:
    (policy_dir / "routing.rego").write_text("package stellwerk.routing\ndecision := {\n")
    with pytest.raises(PolicyError):
        push(policy_dir)
