"""One CLI convention (services/kernel/cli_conventions.py): ``--format table|json|jsonl``,
``stellwerk --version``, no local variables in a crash's traceback, one way an unreachable mesh
exits 3."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import nats.errors
import nats.js.errors
import pytest
import typer
from typer.testing import CliRunner

from services.dlp.cli import app as dlp_app
from services.kernel.cli_conventions import FAILED, MESH_HINT, MESH_UNREACHABLE, NATS_UNREACHABLE, run_on_mesh
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


# --- run_on_mesh: the one path from an unreachable mesh to exit 3 -------------------------------

MESH_URL = "nats://operator:s3cret@mesh.example:4222"


async def _failing(exc: Exception) -> None:
    raise exc


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError("Connect call failed ('127.0.0.1', 4222)"),
    TimeoutError(),
    nats.errors.TimeoutError(),
    nats.errors.NoServersError(),
    nats.errors.ConnectionClosedError(),
    nats.errors.NoRespondersError(),
    nats.js.errors.ServiceUnavailableError(),
], ids=lambda exc: type(exc).__qualname__)
def test_an_unreachable_mesh_exits_3_with_one_message(exc: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        run_on_mesh(MESH_URL, _failing(exc))
    assert exited.value.exit_code == MESH_UNREACHABLE == 3
    stderr = capsys.readouterr().err
    assert stderr == (f"error: cannot reach the mesh at nats://mesh.example:4222: {type(exc).__name__} "
                      f"({MESH_HINT})\n")
    assert "s3cret" not in stderr and "Connect call failed" not in stderr  # the URL, not credentials or text


def test_the_nats_errors_named_for_an_unreachable_mesh_exist_in_nats_py() -> None:
    for name in NATS_UNREACHABLE:
        module, _, kind = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), kind), type), name


def test_run_on_mesh_returns_the_result_and_lets_other_errors_through(capsys: pytest.CaptureFixture[str]) -> None:
    async def answer() -> int:
        return 42

    assert run_on_mesh(MESH_URL, answer()) == 42
    with pytest.raises(ValueError, match="a bug"):  # a bug is a bug, not an unreachable mesh
        run_on_mesh(MESH_URL, _failing(ValueError("a bug")))
    with pytest.raises(typer.Exit) as refused:  # a command's own answer keeps its exit code
        run_on_mesh(MESH_URL, _failing(typer.Exit(FAILED)))
    assert refused.value.exit_code == FAILED
    assert capsys.readouterr().err == ""


def test_a_commands_own_no_answer_has_its_message_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    class DeadlineExceeded(TimeoutError):  # an OSError too: its own message comes first
        pass

    with pytest.raises(typer.Exit) as exited:
        run_on_mesh(MESH_URL, _failing(DeadlineExceeded()), unanswered={DeadlineExceeded: "no result in time"})
    assert exited.value.exit_code == MESH_UNREACHABLE
    assert capsys.readouterr().err == "error: no result in time\n"
