"""One CLI convention (services/kernel/cli_conventions.py): ``--format table|json|jsonl``,
``stellwerk --version``, no local variables in a crash's traceback."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from services.dlp.cli import app as dlp_app
from services.router.cli import app as route_app
from stellwerk.cli import app as stellwerk_app

runner = CliRunner()
CLI_MODULES = ("stellwerk.cli", "services.dlp.cli", "services.router.cli", "services.audit.cli",
               "services.finops.cli", "services.toolgateway.cli")
SECRET = "Befund Erika Mustermann, geb. 12.03.1961, DE89370400440532013000"
ROUTING_INPUT = {"data_sensitivity": "internal", "usecase_class": "chat", "tenant": "acme",
                 "business_unit": "claims", "user_role": "analyst"}


def _typers(app: typer.Typer) -> list[typer.Typer]:
    found = [app]
    for group in app.registered_groups:
        if group.typer_instance is not None:
            found += _typers(group.typer_instance)
    return found


def test_every_typer_hides_local_variables() -> None:
    apps = _typers(stellwerk_app)
    for name in CLI_MODULES:  # also as run on their own (python -m services.finops.cli)
        module = importlib.import_module(name)
        apps += [value for value in vars(module).values() if isinstance(value, typer.Typer)]
    assert len(apps) >= 11
    assert [a.info.help for a in apps if a.pretty_exceptions_show_locals is not False] == []


def test_a_crashing_command_does_not_print_its_locals() -> None:
    # The real `stellwerk` app and its real `dlp` sub-app, with one command that fails the way
    # an unexpected bug in `dlp check` would: after reading the text to screen into a local.
    script = textwrap.dedent("""
        import sys
        from services.dlp.cli import app as dlp_app
        from stellwerk import cli

        @dlp_app.command("crash")
        def crash() -> None:
            text = sys.stdin.read()
            words = text.split()
            raise RuntimeError(f"screening failed after {len(words)} words")

        sys.argv = ["stellwerk", "dlp", "crash"]
        cli.main()
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("TYPER_STANDARD_TRACEBACK", "_TYPER_STANDARD_TRACEBACK")}
    run = subprocess.run([sys.executable, "-c", script], input=SECRET, capture_output=True, text=True,
                         env={**env, "COLUMNS": "200"}, timeout=120, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert "RuntimeError" in output and "screening failed after" in output, output[-2000:]
    assert "Traceback" in output  # the pretty traceback was printed ...
    for value in ("Mustermann", "DE89370400440532013000", "12.03.1961"):
        assert value not in output  # ... without the values of `text` and `words`


def test_version() -> None:
    result = runner.invoke(stellwerk_app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("stellwerk ") and result.stdout.split()[1][0].isdigit()


def test_dlp_check_formats_and_deprecated_aliases() -> None:
    text = "Schreib an jonas.weber@example.de"
    as_json = runner.invoke(dlp_app, ["check", "--format", "json"], input=text)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["redacted_text"] == "Schreib an <EMAIL_ADDRESS>"
    assert runner.invoke(dlp_app, ["check", "--json"], input=text).stdout == as_json.stdout
    lines = "\n".join(json.dumps({"id": i, "text": text}) for i in ("a", "b")) + "\n"
    as_jsonl = runner.invoke(dlp_app, ["check", "--format", "jsonl"], input=lines)
    assert as_jsonl.exit_code == 0, as_jsonl.output
    assert [json.loads(line)["id"] for line in as_jsonl.stdout.splitlines()] == ["a", "b"]
    assert runner.invoke(dlp_app, ["check", "--jsonl"], input=lines).stdout == as_jsonl.stdout
    table = runner.invoke(dlp_app, ["check", "--format", "table"], input=text)
    assert table.exit_code == 0 and "REDACT" in table.stdout
    assert runner.invoke(dlp_app, ["check", "--format", "yaml"], input=text).exit_code == 2


@pytest.mark.parametrize("args", [["--format", "jsonl"], ["--jsonl"]])
def test_route_explain_jsonl_and_its_deprecated_alias(args: list[str]) -> None:
    lines = "\n".join(json.dumps({"id": i, **ROUTING_INPUT}) for i in (1, 2)) + "\n"
    result = runner.invoke(route_app, ["explain", *args], input=lines)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]


def test_route_explain_json_by_default_and_a_table_on_request() -> None:
    document = runner.invoke(route_app, ["explain"], input=json.dumps(ROUTING_INPUT))
    assert document.exit_code == 0, document.output
    decided = json.loads(document.stdout)
    table = runner.invoke(route_app, ["explain", "--format", "table"], input=json.dumps(ROUTING_INPUT))
    assert table.exit_code == 0, table.output
    assert decided["rule_id"] in table.stdout and decided["route"] in table.stdout
