"""``stellwerk route explain`` and the ``push`` helper behind ``stellwerk policy push``.

explain evaluates the policy locally (no bus): what would the router decide for this
input under this policy directory? Exit codes: 0 decided, 1 the policy could not decide
(or a ``--format jsonl`` line was invalid), 2 the input is invalid.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from schemas.vocabulary import Operation
from services.kernel.cli_conventions import FAILED, INVALID_INPUT, OutputFormat
from services.router.decision import (
    RouteEntry,
    RouterSettings,
    RoutingEngine,
    RoutingInput,
    RoutingUnavailable,
    route_catalogue,
)
from services.router.policy_store import check_policy_dir
from services.runtime.rego import PolicySource
from services.runtime.settings import MeshSettings, load_config

app = typer.Typer(help="Routing policy: explain what the router decides.", add_completion=False,
                  pretty_exceptions_show_locals=False)

_encoder = msgspec.json.Encoder()


@app.callback()
def _route() -> None:
    """Routing policy tools."""  # keeps `explain` a subcommand even while it is the only one


def push(directory: Path) -> PolicySource:
    """A policy directory as a source to push to the routers, after it compiled and passed
    its own case tables (raises ``PolicyError`` otherwise; nothing is pushed)."""
    return check_policy_dir(directory)


def _explanation(engine: RoutingEngine, policy_input: RoutingInput) -> dict[str, Any]:
    decision = engine.decide(policy_input)
    return {
        "route": decision.route,
        "rule_id": decision.rule_id,
        "policy_version": decision.policy_version,
        "fallbacks": decision.fallbacks,
    }


def _write(document: dict[str, Any]) -> None:
    sys.stdout.write(_encoder.encode(document).decode() + "\n")


class _Overrides(msgspec.Struct, kw_only=True):
    """Command-line options that set fields of every routing input, and the catalogue used
    where an input brings no ``routes``."""

    routes: list[RouteEntry]
    operation: Operation | None = None
    need_json_schema: bool | None = None
    requested_model: str | None = None

    def apply(self, policy_input: RoutingInput) -> RoutingInput:
        changes: dict[str, Any] = {}
        if not policy_input.routes:
            changes["routes"] = self.routes
        if self.operation is not None:
            changes["operation"] = self.operation
        if self.need_json_schema is not None:
            changes["need_json_schema"] = self.need_json_schema
        if self.requested_model is not None:
            changes["requested_model"] = None if self.requested_model == "stellwerk" else self.requested_model
        if not changes:
            return policy_input
        # Through the typed constructor again, so an invalid option value is an invalid input.
        return msgspec.convert(msgspec.to_builtins(policy_input) | msgspec.to_builtins(changes), RoutingInput)


def _explain_jsonl(engine: RoutingEngine, lines: list[str], overrides: _Overrides) -> bool:
    """One answer line per input line, ``id`` echoed; returns False if any line was invalid."""
    all_ok = True
    for line in lines:
        if not line.strip():
            continue
        line_id: Any = None
        try:
            document = msgspec.json.decode(line)
            if not isinstance(document, dict):
                raise msgspec.ValidationError("expected a JSON object")
            line_id = document.pop("id", None)
            policy_input = overrides.apply(msgspec.convert(document, RoutingInput))
        except msgspec.MsgspecError as exc:
            all_ok = False
            _write({"id": line_id, "error": "invalid_input", "detail": str(exc)})
            continue
        _write({"id": line_id, **_explanation(engine, policy_input)})
    return all_ok


@app.command()
def explain(
    output: Annotated[OutputFormat, typer.Option(
        "--format", help="json: one answer (default); jsonl: one routing input per line, each answer "
        "echoes its `id`; table: for people.")] = OutputFormat.json,
    jsonl: Annotated[bool, typer.Option("--jsonl", hidden=True, help="Deprecated: --format jsonl.")] = False,
    policy_dir: Annotated[
        Path | None, typer.Option(help="Policy directory to evaluate (default: the router's).")
    ] = None,
    config: Annotated[Path | None, typer.Option(
        help="Platform config whose routes are the catalogue for inputs without `routes` "
        "(default: STELLWERK_CONFIG_FILE or the shipped default).")] = None,
    operation: Annotated[str | None, typer.Option(help="chat or embeddings (overrides the input).")] = None,
    need_json_schema: Annotated[bool | None, typer.Option(
        "--need-json-schema/--no-need-json-schema", help="The request asks for a JSON schema answer.")] = None,
    model: Annotated[str | None, typer.Option(
        help="The route or route class the client names in `model` (`stellwerk`: the policy chooses).")] = None,
) -> None:
    """Read a routing input as JSON on stdin; print route, rule_id, policy_version, fallbacks.

    An input without ``routes`` is decided over the platform config's route catalogue."""
    settings = RouterSettings() if policy_dir is None else RouterSettings(policy_dir=policy_dir)
    text = sys.stdin.read()
    try:
        platform = load_config(config or MeshSettings().config_file)
        overrides = msgspec.convert(
            {"routes": msgspec.to_builtins(route_catalogue(platform)), "operation": operation,
             "need_json_schema": need_json_schema, "requested_model": model},
            _Overrides,
        )
    except (OSError, ValueError, msgspec.MsgspecError) as exc:
        typer.echo(f"invalid option or config: {exc}", err=True)
        raise typer.Exit(INVALID_INPUT) from exc
    try:
        engine = RoutingEngine(settings)
        if jsonl or output is OutputFormat.jsonl:
            if not _explain_jsonl(engine, text.splitlines(), overrides):
                raise typer.Exit(FAILED)
            return
        try:
            policy_input = overrides.apply(msgspec.json.decode(text, type=RoutingInput))
        except msgspec.MsgspecError as exc:
            typer.echo(f"invalid routing input: {exc}", err=True)
            raise typer.Exit(INVALID_INPUT) from exc
        explanation = _explanation(engine, policy_input)
        if output is OutputFormat.table:
            _print_table(explanation)
        else:
            _write(explanation)
    except RoutingUnavailable as exc:
        typer.echo(f"routing policy unavailable: {exc}", err=True)
        raise typer.Exit(FAILED) from exc


def _print_table(explanation: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("route", "rule", "policy version", "fallbacks")
    table.add_row(explanation["route"], explanation["rule_id"], explanation["policy_version"],
                  ", ".join(explanation["fallbacks"]) or "-")
    Console().print(table)
