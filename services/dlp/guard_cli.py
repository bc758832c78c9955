"""``stellwerk guard check``: run the guardrails the DLP workers run, on text from stdin.

For each input ``{"id", "text", "direction": "input"|"output", "usecase"?}`` (``--format
jsonl``; ``table``/``json`` read the whole of stdin as one text) prints ``{"id", "action",
"rule_id", "policy_version", "categories": [{"name", "score"}]}``: scores and rule ids,
never the text (a ``replace`` decision adds the policy's fixed ``safe_answer``).

Exit codes (``services.kernel.cli_conventions``; docs/guardrails.md, "CLI"):

    0  decided — ``table``/``json``: the text may pass (allow, flag, review);
       ``jsonl``: every line was decided (each line carries its own action, as in
       ``dlp check``)
    1  ``table``/``json``: the guard refuses the text (block; replace on output)
    2  invalid input: a bad option, or a ``jsonl`` line that is no request object (its line
       says ``invalid_request``; the other lines are still decided)
    3  the guard could not load or decide (``guard_unavailable``; for ``jsonl`` on any line)
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from schemas.vocabulary import Direction, UsecaseClass
from services.kernel.cli_conventions import FAILED, INVALID_INPUT, MESH_UNREACHABLE, OK, OutputFormat

if TYPE_CHECKING:
    from services.dlp.guardrails import GuardDecision, Guardrails

app = typer.Typer(help="Guardrails: prompt injection, topics per use case, output moderation.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

REFUSING = ("block", "replace")  # the text as given does not pass
# The guard could not decide, as ``dlp check`` says when its engine cannot screen.
GUARD_UNAVAILABLE = MESH_UNREACHABLE


@app.callback()
def guard() -> None:
    """Guardrails: prompt injection, topics per use case, output moderation."""


def record(decision: GuardDecision, record_id: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {} if record_id is None else {"id": record_id}
    out.update(
        action=decision.action,
        rule_id=decision.rule_id,
        policy_version=decision.policy_version,
        categories=[{"name": c.name, "score": c.score} for c in decision.categories],
    )
    if decision.signals:
        out["signals"] = list(decision.signals)
    if decision.safe_answer:
        out["safe_answer"] = decision.safe_answer
    return out


def _load() -> Guardrails:
    from services.dlp.guardrails import Guardrails, GuardUnavailable
    from services.dlp.settings import DlpSettings

    try:
        return Guardrails(DlpSettings().guard_policy_dir)
    except GuardUnavailable as exc:
        typer.echo(json.dumps({"error": {"code": "guard_unavailable", "message": str(exc)}}), err=True)
        raise typer.Exit(GUARD_UNAVAILABLE) from exc


def _context(usecase: str, tenant: str, business_unit: str, role: str) -> Any:
    from services.dlp.guard import PolicyContext

    if usecase not in get_args(UsecaseClass):
        raise typer.BadParameter(f"one of {', '.join(get_args(UsecaseClass))}", param_hint="--usecase")
    return PolicyContext(usecase_class=usecase, tenant=tenant, business_unit=business_unit,  # type: ignore[arg-type]
                         user_role=role)


@app.command()
def check(
    direction: Annotated[str, typer.Option("--direction", "-d", help="input (prompt) or output (answer).")] = "input",
    output: Annotated[OutputFormat, typer.Option(
        "--format", help='table: for people; json: one JSON object; jsonl: read {"id", "text", "direction", '
        '"usecase"?} per line, write one result per line.')] = OutputFormat.table,
    usecase: Annotated[str, typer.Option("--usecase", help="Default use-case class for the policy.")] = "chat",
    tenant: Annotated[str, typer.Option(help="Tenant for the policy.")] = "cli",
    business_unit: Annotated[str, typer.Option("--business-unit", help="Business unit for the policy.")] = "cli",
    role: Annotated[str, typer.Option("--role", help="User role for the policy.")] = "cli",
) -> None:
    """Check text from stdin and print the decision (never the text)."""
    from services.dlp.guardrails import GuardUnavailable

    if direction not in ("input", "output"):
        raise typer.BadParameter("must be 'input' or 'output'", param_hint="--direction")
    default: Direction = "input" if direction == "input" else "output"
    guardrails = _load()
    if output is OutputFormat.jsonl:
        invalid = unavailable = 0
        for number, line in enumerate(sys.stdin, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                    raise ValueError("needs an object with a string 'text'")
                line_direction = str(item.get("direction", default))
                if line_direction not in ("input", "output"):
                    raise ValueError("direction")
                context = _context(str(item.get("usecase", usecase)), tenant, business_unit, role)
            except (ValueError, typer.BadParameter):
                invalid += 1
                typer.echo(json.dumps({"id": number, "error": {"code": "invalid_request",
                                                              "message": "line is not a valid request object"}}))
                continue
            record_id = item.get("id", number)
            try:
                decision = guardrails.check([item["text"]], direction="input" if line_direction == "input"
                                            else "output", context=context)
            except GuardUnavailable:
                unavailable += 1
                typer.echo(json.dumps({"id": record_id, "error": {"code": "guard_unavailable",
                                                                 "message": "guardrails failed"}}))
                continue
            typer.echo(json.dumps(record(decision, record_id), ensure_ascii=False))
        raise typer.Exit(GUARD_UNAVAILABLE if unavailable else INVALID_INPUT if invalid else OK)
    context = _context(usecase, tenant, business_unit, role)
    try:
        decision = guardrails.check([sys.stdin.read()], direction=default, context=context)
    except GuardUnavailable as exc:
        typer.echo(json.dumps({"error": {"code": "guard_unavailable", "message": str(exc)}}), err=True)
        raise typer.Exit(GUARD_UNAVAILABLE) from exc
    result = record(decision)
    if output is OutputFormat.json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        colour = {"allow": "green", "flag": "yellow", "review": "yellow", "block": "red", "replace": "red"}
        console.print(f"[bold {colour[decision.action]}]{decision.action.upper()}[/]  rule {decision.rule_id}  "
                      f"policy {decision.policy_version}")
        if decision.categories:
            table = Table("category", "score")
            for c in decision.categories:
                table.add_row(c.name, f"{c.score:.3f}")
            console.print(table)
        if decision.signals:
            console.print("signals: " + ", ".join(decision.signals))
    raise typer.Exit(FAILED if decision.action in REFUSING else OK)
