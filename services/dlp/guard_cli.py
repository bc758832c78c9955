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
import re
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


# --- reviews: guard decisions ``review`` waiting for a human (KV guard_reviews) ----------------

reviews_app = typer.Typer(help="Guard decisions 'review' waiting for a human: list and resolve.",
                          no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(reviews_app, name="reviews")

NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server URL (default: STELLWERK_NATS_URL).")]


def _with_store(nats_url: str | None, work: Any) -> Any:
    """Connect, run ``work(store, js)``, close; an unreachable mesh exits 3."""
    from schemas.streams import KV_GUARD_REVIEWS
    from services.dlp.reviews import ReviewStore
    from services.kernel.cli_conventions import run_on_mesh
    from services.runtime.bus import connect
    from services.runtime.settings import MeshSettings

    settings = MeshSettings(**({"nats_url": nats_url} if nats_url else {}))  # type: ignore[arg-type]

    async def main() -> Any:
        nc = await connect(settings.nats_url, "stellwerk-cli-guard", persistent=False)
        try:
            js = nc.jetstream()
            return await work(ReviewStore(await js.key_value(KV_GUARD_REVIEWS)), js)
        finally:
            await nc.close()

    return run_on_mesh(settings.nats_url, main())


def review_row(review: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(review)  # type: ignore[no-any-return]


@reviews_app.command("list")
def reviews_list(
    all_: Annotated[bool, typer.Option("--all", help="Include resolved reviews.")] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="table, json, or jsonl (one per line).")]
    = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """Guard reviews, oldest first: request, rule, scores — never the text."""

    async def work(store: Any, _: Any) -> list[Any]:
        return await store.items(include_resolved=all_)  # type: ignore[no-any-return]

    items = _with_store(nats_url, work)
    rows = [review_row(r) for r in items]
    if output is OutputFormat.jsonl:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    if output is OutputFormat.json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Guard reviews" if all_ else "Guard reviews awaiting a human")
    for column in ("id", "status", "created", "request", "tenant/unit", "use case", "direction", "rule", "scores"):
        table.add_column(column, overflow="fold")
    for r in items:
        scores = ", ".join(f"{c.name} {c.score:.2f}" for c in r.categories[:3])
        status = r.status if r.status == "open" else f"{r.resolution} by {r.resolved_by}"
        table.add_row(r.review_id, status, r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.request_id,
                      f"{r.tenant}/{r.business_unit}", r.usecase_class, r.direction, r.rule_id, scores)
    Console().print(table)


@reviews_app.command("resolve")
def reviews_resolve(
    review_id: Annotated[str, typer.Argument(help="The review's id (stellwerk guard reviews list).")],
    actor: Annotated[str | None, typer.Option("--actor", help="Who resolves it, as audited (default: "
                                              "$STELLWERK_ACTOR or the OS user).")] = None,
    dismiss: Annotated[bool, typer.Option("--dismiss", help="A false alarm (default: --confirm, the guard "
                                          "was right).")] = False,
    confirm: Annotated[bool, typer.Option("--confirm", help="The guard was right.")] = False,
    nats_url: NatsUrl = None,
) -> None:
    """Resolve one review (once; the resolution is audited on the request's trail)."""
    from services.kernel.cli_conventions import operator_actor

    if dismiss and confirm:
        raise typer.BadParameter("either --confirm or --dismiss", param_hint="--dismiss")
    if not re.fullmatch(r"[0-9a-f]{16}", review_id):
        raise typer.BadParameter("a review id is 16 hexadecimal characters", param_hint="REVIEW_ID")
    try:
        who = operator_actor(actor)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--actor") from exc
    resolution = "dismissed" if dismiss else "confirmed"

    async def work(store: Any, js: Any) -> Any:
        from schemas import subjects
        from schemas.events import encode
        from services.dlp.reviews import Refused, resolution_audit

        outcome = await store.resolve(review_id, who, resolution)
        if not isinstance(outcome, Refused):
            audit = resolution_audit(outcome)
            await js.publish(subjects.audit("approval"), encode(audit),
                             headers={"Nats-Msg-Id": f"guard-review:{review_id}"})
        return outcome

    from services.dlp.reviews import Refused

    outcome = _with_store(nats_url, work)
    if isinstance(outcome, Refused):
        typer.echo(json.dumps({"error": {"code": outcome.reason, "review_id": review_id}}), err=True)
        raise typer.Exit(FAILED)
    typer.echo(json.dumps(review_row(outcome), ensure_ascii=False))
