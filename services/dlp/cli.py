"""``stellwerk dlp check``: screen text from stdin with the same guard the service runs.

Prints only metadata (types, offsets, scores, decision) and, for a redact decision, the
redacted text: never a detected value.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from schemas.vocabulary import Direction, UsecaseClass
from services.kernel.cli_conventions import FAILED, OutputFormat

if TYPE_CHECKING:
    from services.dlp.guard import DlpGuard, PolicyContext, Screening

# Locals off: a crash must not print the text being screened (it is a local of ``check``).
app = typer.Typer(help="DLP guard: screen text for personal and medical data.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)



@app.callback()
def dlp() -> None:
    """DLP guard: screen text for personal and medical data."""


DirectionOpt = Annotated[str, typer.Option("--direction", "-d", help="input (prompt) or output (answer).")]


def _direction(value: str) -> Direction:
    if value not in ("input", "output"):
        raise typer.BadParameter("must be 'input' or 'output'", param_hint="--direction")
    return "input" if value == "input" else "output"


def result_record(screening: Screening, record_id: Any = None) -> dict[str, Any]:
    """The CLI's result object (documented in docs/dlp.md)."""
    from services.runtime.errors import fixed_message

    decision = screening.decision
    record: dict[str, Any] = {} if record_id is None else {"id": record_id}
    record.update(
        action=decision.action,
        rule_id=decision.rule_id,
        policy_version=decision.policy_version,
        direction=decision.direction,
        language=decision.language,
        derived_sensitivity=decision.derived_sensitivity,
        has_pii=decision.has_pii,
        has_medical_terms=decision.has_medical_terms,
        medical_term_density=decision.medical_term_density,
        medical_categories=screening.medical_categories,
        entities=[
            {"type": f.type, "start": f.start, "end": f.end, "score": f.score}
            for f in screening.findings
        ],
    )
    if decision.action == "redact" and screening.texts is not None:
        record["redacted_text"] = screening.texts[0]
    if decision.action == "block":
        code: Literal["dlp_blocked_input", "dlp_blocked_output"] = (
            "dlp_blocked_output" if decision.direction == "output" else "dlp_blocked_input"
        )
        record["error"] = {"code": code, "message": fixed_message(code)}
    return record


def _load_guard() -> DlpGuard:
    from services.dlp.guard import DlpGuard, DlpUnavailable

    try:
        return DlpGuard.from_settings()
    except DlpUnavailable as exc:
        typer.echo(json.dumps({"error": {"code": "dlp_unavailable", "message": str(exc)}}), err=True)
        raise typer.Exit(3) from exc


@app.command()
def check(
    direction: DirectionOpt = "input",
    output: Annotated[OutputFormat, typer.Option(
        "--format", help='table: for people; json: one JSON object; jsonl: read {"id", "text", "direction"} '
        "per line, write one result per line.")] = OutputFormat.table,
    as_json: Annotated[bool, typer.Option("--json", hidden=True, help="Deprecated: --format json.")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", hidden=True, help="Deprecated: --format jsonl.")] = False,
    usecase_class: Annotated[str, typer.Option("--usecase", help="Use-case class for the policy.")] = "chat",
    tenant: Annotated[str, typer.Option(help="Tenant for the policy.")] = "cli",
    business_unit: Annotated[str, typer.Option("--business-unit", help="Business unit for the policy.")] = "cli",
    user_role: Annotated[str, typer.Option("--role", help="User role for the policy.")] = "cli",
    pseudonymize: Annotated[bool, typer.Option(help="Numbered placeholders (<PERSON_1>) instead of the configured operators.")] = False,
) -> None:
    """Screen text from stdin and print the decision (never the detected values)."""
    from services.dlp.guard import DlpUnavailable, PolicyContext

    default_direction = _direction(direction)
    usecase: UsecaseClass = _usecase(usecase_class)
    context = PolicyContext(usecase_class=usecase, tenant=tenant, business_unit=business_unit,
                            user_role=user_role)
    output = OutputFormat.jsonl if jsonl else OutputFormat.json if as_json else output
    guard = _load_guard()
    if output is OutputFormat.jsonl:
        failures = _check_lines(guard, context, default_direction, pseudonymize)
        raise typer.Exit(FAILED if failures else 0)
    text = sys.stdin.read()
    try:
        screening = guard.screen([text], direction=default_direction, context=context,
                                 pseudonymize=pseudonymize)
    except DlpUnavailable as exc:
        typer.echo(json.dumps({"error": {"code": "dlp_unavailable", "message": str(exc)}}), err=True)
        raise typer.Exit(3) from exc
    record = result_record(screening)
    if output is OutputFormat.json:
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        _print_human(record)


def _usecase(value: str) -> UsecaseClass:
    from typing import get_args

    if value not in get_args(UsecaseClass):
        raise typer.BadParameter(f"one of {', '.join(get_args(UsecaseClass))}", param_hint="--usecase")
    return value  # type: ignore[return-value]


def _check_lines(guard: DlpGuard, context: PolicyContext, default: Direction, pseudonymize: bool) -> int:
    from services.dlp.guard import DlpUnavailable

    failures = 0
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError("needs an object with a string 'text'")
            record_id = item.get("id", number)
            line_direction = _direction(str(item.get("direction", default)))
        except (ValueError, typer.BadParameter):
            failures += 1
            typer.echo(json.dumps({"id": number, "error": {"code": "invalid_request",
                                                          "message": "line is not a valid request object"}}))
            continue
        try:
            screening = guard.screen([item["text"]], direction=line_direction, context=context,
                                     pseudonymize=pseudonymize)
        except DlpUnavailable:
            failures += 1
            typer.echo(json.dumps({"id": record_id, "error": {"code": "dlp_unavailable",
                                                             "message": "screening failed"}}))
            continue
        typer.echo(json.dumps(result_record(screening, record_id), ensure_ascii=False))
    return failures


def _print_human(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    colour = {"allow": "green", "redact": "yellow", "block": "red"}[record["action"]]
    console.print(f"[bold {colour}]{record['action'].upper()}[/]  rule {record['rule_id']}  "
                  f"policy {record['policy_version']}")
    console.print(f"direction {record['direction']}  language {record['language']}  "
                  f"sensitivity {record['derived_sensitivity']}  has_pii {record['has_pii']}  "
                  f"medical {record['has_medical_terms']} (density {record['medical_term_density']}"
                  f"{', ' + ', '.join(record['medical_categories']) if record['medical_categories'] else ''})")
    if record["entities"]:
        table = Table("type", "start", "end", "score")
        for entity in record["entities"]:
            table.add_row(entity["type"], str(entity["start"]), str(entity["end"]), f"{entity['score']:.2f}")
        console.print(table)
    if "redacted_text" in record:
        console.print("[bold]redacted text:[/]")
        console.print(record["redacted_text"], markup=False, highlight=False)
    if "error" in record:
        console.print(f"[red]{record['error']['message']}[/]")


