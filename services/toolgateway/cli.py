"""``stellwerk tools ...`` and ``stellwerk approvals ...`` (mounted by ``stellwerk.cli``).

tools list [--role R]            which tools exist; with a role: which it may call, and how
tools call TOOL --role R --args JSON
                                 one call through the gateway, exactly as an agent makes it
approvals list [--all]           calls waiting for a human (with their arguments: the approver
                                 must see what is approved)
approvals approve ID [--reason CODE]
approvals deny ID --reason CODE  reasons are codes (customer_request, wrong_ticket, ...), not
                                 prose: they are audited, and the audit holds no free text

Output: ``--format table|json|jsonl`` (``--json`` is a deprecated alias of ``--format json``).
Exit codes (services/kernel/cli_conventions.py): 0 done; 1 refused or failed (the result says
why); 2 invalid input; 3 the mesh or its tool gateway is unreachable or did not answer in time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, get_args

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from schemas.events import (
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ToolCallResult,
    ToolCatalog,
    ToolListRequested,
    utcnow,
)
from schemas.streams import KV_APPROVALS
from schemas.vocabulary import UsecaseClass
from services.kernel.cli_conventions import FAILED, INVALID_INPUT, OutputFormat, run_on_mesh
from services.runtime.bus import connect
from services.runtime.settings import MeshSettings, load_config
from services.toolgateway.approval_store import ApprovalStore
from services.toolgateway.approvals import ApprovalRecord
from services.toolgateway.client import (
    ToolCallTimeout,
    ToolGatewayUnavailable,
    ToolsClient,
    decide_approval,
    list_tools,
    split_tool,
)

app = typer.Typer(help="Tools behind the tool gateway: list them, call one.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
approvals_app = typer.Typer(help="Human approval of critical tool calls.", no_args_is_help=True,
                            pretty_exceptions_show_locals=False)
console = Console()
err = Console(stderr=True)

REASON: Final = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
APPROVER: Final = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,64}$")
T = TypeVar("T")

NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server URL (default: STELLWERK_NATS_URL).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Platform config file (YAML).")]
Format = Annotated[OutputFormat, typer.Option("--format", help="table, json, or jsonl (one object per line).")]
AsJson = Annotated[bool, typer.Option("--json", hidden=True, help="Deprecated: --format json.")]


def _settings(nats_url: str | None, config: Path | None = None) -> MeshSettings:
    overrides: dict[str, object] = {}
    if nats_url:
        overrides["nats_url"] = nats_url
    if config:
        overrides["config_file"] = config.resolve()
    return MeshSettings(**overrides)  # type: ignore[arg-type]


# The mesh is up but the tool gateway gives no answer: exit 3 as well, with what to do.
GATEWAY_UNANSWERED: Final[dict[type[Exception], str]] = {
    ToolGatewayUnavailable: "no tool gateway is running (stellwerk up starts one)",
    ToolCallTimeout: "no answer before the deadline (a critical tool may still await approval)",
}


def _run(settings: MeshSettings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Connect, run ``work(nc)``, close; map an unreachable mesh or gateway to MESH_UNREACHABLE."""

    async def main() -> T:
        nc = await connect(settings.nats_url, "stellwerk-cli-tools", persistent=False)
        try:
            return await work(nc)
        finally:
            await nc.close()

    return run_on_mesh(settings.nats_url, main(), unanswered=GATEWAY_UNANSWERED)


def _chosen(output: OutputFormat, as_json: bool) -> OutputFormat:
    return OutputFormat.json if as_json else output


def _print_data(value: Any, output: OutputFormat, items: list[Any] | None = None) -> None:
    """json: one document; jsonl: one compact line per item (``items``) or for the value."""
    if output is OutputFormat.jsonl:
        for item in items if items is not None else [value]:
            typer.echo(msgspec.json.encode(item).decode())
        return
    console.print_json(msgspec.json.encode(value).decode())


# --- tools -------------------------------------------------------------------------------


def _yes_no(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    return "?" if value is None else yes if value else no


@app.command("list")
def list_command(
    role: Annotated[str | None, typer.Option(help="Show what this agent role may call.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant (its rules apply too).")] = None,
    business_unit: Annotated[str | None, typer.Option()] = None,
    output: Format = OutputFormat.table,
    as_json: AsJson = False,
    nats_url: NatsUrl = None,
) -> None:
    """The tools the gateway has discovered; with --role, whether that role may call each."""
    output = _chosen(output, as_json)
    settings = _settings(nats_url)
    request = ToolListRequested(role=role, tenant=tenant, business_unit=business_unit)
    catalog: ToolCatalog = _run(settings, lambda nc: list_tools(nc, request))
    if output is not OutputFormat.table:
        _print_data(catalog, output, list(catalog.tools))
        return
    table = Table(title=f"Tools{f' for role {role}' if role else ''}")
    table.add_column("tool")
    table.add_column("read-only")
    if role:
        for column in ("allowed", "approval", "rule"):
            table.add_column(column)
    table.add_column("description")
    for tool in catalog.tools:
        row = [f"{tool.server}.{tool.name}", _yes_no(tool.read_only)]
        if role:
            row += [
                _yes_no(tool.allowed, "[green]yes[/]", "[red]no[/]"),
                "required" if tool.approval_required else "",
                tool.rule_id or "",
            ]
        table.add_row(*row, tool.description.splitlines()[0] if tool.description else "")
    console.print(table)
    down = [name for name, up in catalog.servers.items() if not up]
    if down:
        err.print(f"[yellow]not connected:[/] {', '.join(down)}")


@app.command("call")
def call_command(
    tool: Annotated[str, typer.Argument(help="<server>.<tool>, e.g. search.web_search")],
    role: Annotated[str, typer.Option(help="The agent role to call as.")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    tenant: Annotated[str | None, typer.Option(help="Tenant (default: the first API key's).")] = None,
    business_unit: Annotated[str | None, typer.Option()] = None,
    usecase: Annotated[str, typer.Option(help="Use case class.")] = "chat",
    agent: Annotated[str, typer.Option(help="Agent id.")] = "cli",
    user: Annotated[str | None, typer.Option(help="The user the agent acts for.")] = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds (include approval time).")] = 120.0,
    output: Format = OutputFormat.table,
    as_json: AsJson = False,
    nats_url: NatsUrl = None,
    config: ConfigOpt = None,
) -> None:
    """Call a tool through the gateway, as an agent of --role would."""
    try:
        split_tool(tool)
        arguments = json.loads(args)
        if not isinstance(arguments, dict):
            raise ValueError("--args must be a JSON object")
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(INVALID_INPUT) from exc
    if usecase not in get_args(UsecaseClass):
        err.print(f"[red]error:[/] --usecase must be one of {', '.join(get_args(UsecaseClass))}")
        raise typer.Exit(INVALID_INPUT)
    settings = _settings(nats_url, config)
    key = load_config(settings.config_file).api_keys[0]

    async def work(nc: Any) -> ToolCallResult:
        client = ToolsClient(
            nc, tenant=tenant or key.tenant, business_unit=business_unit or key.business_unit, user_role=role,
            agent_id=agent, usecase_class=usecase, user_id=user,  # type: ignore[arg-type]
        )
        return await client.call(tool, arguments, timeout_s=timeout)

    result = _run(settings, work)
    output = _chosen(output, as_json)
    if output is OutputFormat.table:
        _print_call(result)
    else:
        _print_data(result, output)
    if result.status != "ok":
        raise typer.Exit(FAILED)


def _print_call(result: ToolCallResult) -> None:
    if result.error is not None:
        error = result.error
        colour = "yellow" if result.status == "refused" else "red"
        err.print(f"[{colour}]{result.status}[/]: {error.code} — {error.message}", highlight=False)
        details = {
            "rule": error.rule_id, "retry after (s)": error.retry_after_s, "at": error.instance_path,
            "schema": error.schema_path, "keyword": error.keyword, "reason": error.reason,
        }
        for name, value in details.items():
            if value not in (None, ""):
                err.print(f"  {name}: {value}", highlight=False)
    if result.structured is not None:
        console.print_json(json.dumps(result.structured, ensure_ascii=False))
    else:
        for block in result.content:
            console.print(block.text, highlight=False)
    meta = f"rule {result.rule_id} · {result.latency_ms:.1f} ms"
    if result.approval_id:
        meta += f" · approval {result.approval_id}"
    if result.injection_signals:
        meta += f" · injection signals: {', '.join(result.injection_signals)}"
    err.print(f"[dim]{meta}[/]", highlight=False)


# --- approvals ---------------------------------------------------------------------------


def _approver(given: str | None) -> str:
    name = given or os.environ.get("STELLWERK_APPROVER") or os.environ.get("USER") or "operator"
    if not APPROVER.match(name):
        err.print("[red]error:[/] --approver must be an identifier (letters, digits, _ . : @ + -)")
        raise typer.Exit(2)
    return name


def _reason(given: str | None, required: bool) -> str | None:
    if given is None:
        if required:
            err.print("[red]error:[/] --reason CODE is required to deny")
            raise typer.Exit(2)
        return None
    if not REASON.match(given):
        err.print(
            "[red]error:[/] --reason takes a code such as customer_request or wrong_ticket, not free text: "
            "it is audited, and the audit holds no free text"
        )
        raise typer.Exit(2)
    return given


def _age(since: datetime, now: datetime) -> str:
    seconds = int((now - since).total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 3600:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{sign}{seconds // 60}m{seconds % 60:02d}s"


@approvals_app.command("list")
def approvals_list(
    all_: Annotated[bool, typer.Option("--all", help="Include decided approvals.")] = False,
    output: Format = OutputFormat.table,
    as_json: AsJson = False,
    nats_url: NatsUrl = None,
) -> None:
    """Tool calls waiting for a human, oldest first, with what they would do."""
    settings = _settings(nats_url)

    async def work(nc: Any) -> list[tuple[ApprovalRecord, dict[str, Any] | None]]:
        store = ApprovalStore(await nc.jetstream().key_value(KV_APPROVALS))
        records = [r for r in await store.records() if all_ or r.state == "pending"]
        records.sort(key=lambda r: r.created_at)
        return [(r, await store.arguments(r.approval_id) if r.state in ("pending", "approved") else None)
                for r in records]

    rows = _run(settings, work)
    output = _chosen(output, as_json)
    if output is not OutputFormat.table:
        listed = [{"record": record, "arguments": arguments} for record, arguments in rows]
        _print_data(listed, output, listed)
        return
    now = utcnow()
    table = Table(title="Tool calls awaiting approval" if not all_ else "Tool call approvals")
    for column in ("id", "state", "tool", "tenant/role", "agent", "user", "waiting", "expires in", "arguments"):
        table.add_column(column, overflow="fold")
    for record, arguments in rows:
        call = record.request
        table.add_row(
            record.approval_id, record.state, f"{call.server}.{call.tool}", f"{call.tenant}/{call.user_role}",
            call.agent_id, call.user_id or "", _age(record.created_at, now),
            _age(now, record.expires_at) if record.state == "pending" else "",
            json.dumps(arguments, ensure_ascii=False) if arguments is not None else "",
        )
    console.print(table)


def _decide(approval_id: str, approve: bool, approver: str, reason: str | None, nats_url: str | None) -> None:
    # Issue 14: the approver's credential (an operator API key or an OIDC token) from the
    # environment, never a flag (shell history); the tool gateway records the identity it proves.
    credential = os.environ.get("STELLWERK_APPROVER_CREDENTIAL") or None
    request = ApprovalDecisionRequested(approval_id=approval_id, approve=approve, approver=approver, reason=reason,
                                        credential=credential)
    reply: ApprovalDecisionReply = _run(_settings(nats_url), lambda nc: decide_approval(nc, request))
    if reply.accepted:
        by = f" by {reply.approver}" if reply.approver else ""
        missing = f"; {reply.approvals_missing} more approval(s) needed (four eyes)" if reply.approvals_missing else ""
        console.print(f"{approval_id}: {reply.state}{by}{missing}")
        return
    if reply.reason == "identity_required":
        err.print("[red]not decided:[/] identity_required — put an approver's API key or token in "
                  "STELLWERK_APPROVER_CREDENTIAL (docs/identity.md#approvers-four-eyes-with-identities)")
        raise typer.Exit(1)
    err.print(f"[red]not decided:[/] {reply.reason}" + (f" (state {reply.state})" if reply.state else ""))
    raise typer.Exit(1)


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval id (approvals list).")],
    approver: Annotated[str | None, typer.Option(help="Who approves (default: $STELLWERK_APPROVER or $USER).")] = None,
    reason: Annotated[str | None, typer.Option(help="Optional reason code.")] = None,
    nats_url: NatsUrl = None,
) -> None:
    """Approve a pending tool call: it runs now, and its caller gets the result."""
    _decide(approval_id, True, _approver(approver), _reason(reason, required=False), nats_url)


@approvals_app.command("deny")
def deny(
    approval_id: Annotated[str, typer.Argument(help="The approval id (approvals list).")],
    reason: Annotated[str | None, typer.Option(help="Reason code, e.g. wrong_ticket (required).")] = None,
    approver: Annotated[str | None, typer.Option(help="Who denies (default: $STELLWERK_APPROVER or $USER).")] = None,
    nats_url: NatsUrl = None,
) -> None:
    """Deny a pending tool call: its caller gets a refusal with your reason code."""
    _decide(approval_id, False, _approver(approver), _reason(reason, required=True), nats_url)
