"""The ``stellwerk`` command: run the mesh, talk to it, inspect it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas.events import ChatMessage, GenerationParams, RequestAttributes, RequestResult
from schemas.vocabulary import DataSensitivity, QualityTier, UsecaseClass
from services.audit.cli import app as audit_app
from services.dlp.cli import app as dlp_app
from services.dlp.guard_cli import app as guard_app
from services.finops.cli import app as finops_app
from services.gateway.keys_cli import app as keys_app
from services.kernel.cli_conventions import MESH_UNREACHABLE, OutputFormat, unreachable
from services.router.cli import app as route_app
from services.runtime.settings import DEFAULT_CONFIG, MeshSettings, load_config
from services.toolgateway.cli import app as tools_app
from services.toolgateway.cli import approvals_app

# Locals off on every Typer: a crash must never print what a command was handling (a prompt,
# a screened text). The top-level app's setting is the one in force for mounted sub-apps.
app = typer.Typer(help="Stellwerk — governed AI gateway on a NATS mesh.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
schemas_app = typer.Typer(help="Event contracts.", no_args_is_help=True, pretty_exceptions_show_locals=False)
policy_app = typer.Typer(help="Policies: push a new version to the running mesh.", no_args_is_help=True,
                         pretty_exceptions_show_locals=False)
app.add_typer(policy_app, name="policy")
app.add_typer(schemas_app, name="schemas")
app.add_typer(route_app, name="route", help="Routing policy: explain decisions.")
app.add_typer(dlp_app, name="dlp", help="DLP guard: check text from stdin.")
app.add_typer(guard_app, name="guard", help="Guardrails: injection, topics, moderation; check text from stdin.")
app.add_typer(finops_app, name="finops", help="FinOps: cost reports, budgets, rebuild from USAGE.")
app.add_typer(audit_app, name="audit", help="Audit trail: verify, show, replay, export.")
app.add_typer(tools_app, name="tools", help="Tool gateway: what a role may call; call a tool.")
app.add_typer(approvals_app, name="approvals", help="Human approval of critical tool calls.")
app.add_typer(keys_app, name="keys", help="API keys as data: create, list, revoke, rotate (docs/identity.md).")
console = Console()
err = Console(stderr=True)

NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server URL (default: STELLWERK_NATS_URL or nats://127.0.0.1:4222).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Platform config file (YAML).")]
Format = Annotated[OutputFormat, typer.Option("--format", help="table, json, or jsonl (one compact line).")]
AsJson = Annotated[bool, typer.Option("--json", hidden=True, help="Deprecated: --format json.")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"stellwerk {version('stellwerk')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _stellwerk(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Stellwerk — governed AI gateway on a NATS mesh."""


def _print_document(document: str, output: OutputFormat) -> None:
    """A JSON document as ``--format json`` (indented) or ``jsonl`` (one compact line)."""
    if output is OutputFormat.jsonl:
        print(json.dumps(json.loads(document), ensure_ascii=False, separators=(",", ":")))
    else:
        console.print_json(document)


def _settings(nats_url: str | None, config: Path | None = None) -> MeshSettings:
    overrides: dict[str, object] = {}
    if nats_url:
        overrides["nats_url"] = nats_url
    if config:
        overrides["config_file"] = config.resolve()
    return MeshSettings(**overrides)  # type: ignore[arg-type]


@app.command()
def up(
    scale: Annotated[str | None, typer.Option(help="Workers per service, e.g. dlp=2,router=1.")] = None,
    nats_url: NatsUrl = None,
    config: ConfigOpt = None,
    nats_port: Annotated[int, typer.Option(help="Port of the embedded NATS server.")] = 4222,
    state_dir: Annotated[Path, typer.Option(help="Where NATS data and logs live.")] = Path(".stellwerk"),
) -> None:
    """Start the whole mesh (embedded NATS unless --nats-url), supervise it, stop on Ctrl-C."""
    from stellwerk.supervisor import Mesh, Part, StartupError, parse_scale

    config_file = (config or Path(os.environ.get("STELLWERK_CONFIG_FILE", DEFAULT_CONFIG))).resolve()
    _warn_plaintext_secrets(config_file)
    try:
        plan = parse_scale(scale)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    mesh = Mesh(config_file=config_file, state_dir=state_dir.resolve(), nats_url=nats_url,
                nats_port=nats_port, scale=plan)

    async def run() -> None:
        with console.status("starting the mesh…"):
            await mesh.start()
        _print_banner(mesh)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        def restarted(part: Part) -> None:
            what = "on the same store and port; services reconnect" if part.name == "nats-server" else ""
            err.print(f"[yellow]{time.strftime('%H:%M:%S')} {part.name} died; restarted {what}[/]")

        await mesh.supervise(stop, on_restart=restarted)
        console.print("stopping…")
        mesh.stop()

    try:
        asyncio.run(run())
    except StartupError as exc:
        err.print(f"[red]stellwerk up failed:[/] {exc}")
        raise typer.Exit(1) from exc


def _warn_plaintext_secrets(config_file: Path) -> None:
    """Issue 14: provider keys belong in the environment or a mounted file, not in the config."""
    import yaml

    from services.runtime.settings import plaintext_secrets

    try:
        raw = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError):
        return  # the mesh's own start reports an unreadable config
    for name in plaintext_secrets(raw):
        err.print(f"[yellow]warning:[/] deployment {name}: api_key is plaintext in {config_file.name}; use "
                  "os.environ/NAME or file:/path (docs/identity.md#secrets-by-reference)", highlight=False)


def _print_banner(mesh: object) -> None:
    from stellwerk.supervisor import Mesh

    assert isinstance(mesh, Mesh)
    table = Table(title="Stellwerk is up", show_header=True)
    table.add_column("part")
    table.add_column("pid", justify="right")
    for part in mesh.parts:
        table.add_row(part.name, str(part.process.pid if part.process else "-"))
    console.print(table)
    console.print(f"NATS      {mesh.url}")
    console.print(f"Gateway   {mesh.gateway_url}/v1  (OpenAI-compatible)")
    if mesh.scale.get("console", 0):
        console.print(f"Console   {mesh.console_url}/  (sign in with an operator key, e.g. sk-stellwerk-operator)")
    console.print(f"Logs      {mesh.logs}")
    console.print("\nTry it:\n")
    console.print(
        f"  curl -s {mesh.gateway_url}/v1/chat/completions \\\n"
        "    -H 'Authorization: Bearer sk-stellwerk-demo' -H 'Content-Type: application/json' \\\n"
        "    -d '{\"model\": \"stellwerk\", \"messages\": [{\"role\": \"user\", \"content\": \"Fasse den Vorgang 4711 zusammen.\"}]}'\n",
        highlight=False, soft_wrap=True,
    )
    console.print('  stellwerk chat "Fasse den Vorgang zusammen."\n\nCtrl-C stops everything.', highlight=False)


@app.command()
def chat(
    text: Annotated[str, typer.Argument(help="The user message.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant (default: the first API key's).")] = None,
    business_unit: Annotated[str | None, typer.Option()] = None,
    role: Annotated[str | None, typer.Option(help="User role.")] = None,
    usecase: Annotated[str | None, typer.Option(help="Use case class.")] = None,
    sensitivity: Annotated[str | None, typer.Option(help="Declared data sensitivity.")] = None,
    quality: Annotated[str | None, typer.Option(help="Quality tier: standard | high.")] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 60.0,
    output: Format = OutputFormat.table,
    as_json: AsJson = False,
    nats_url: NatsUrl = None,
    config: ConfigOpt = None,
) -> None:
    """Send one request through the mesh; print the answer and every decision taken."""
    from typing import get_args

    import msgspec
    from nats.errors import NoServersError

    from stellwerk.client import DeadlineExceeded, StellwerkClient

    settings = _settings(nats_url, config)
    key = load_config(settings.config_file).api_keys[0]
    for name, value, allowed in (("usecase", usecase, UsecaseClass), ("sensitivity", sensitivity, DataSensitivity),
                                 ("quality", quality, QualityTier)):
        if value is not None and value not in get_args(allowed):
            err.print(f"[red]error:[/] --{name} must be one of {', '.join(get_args(allowed))}")
            raise typer.Exit(2)
    attributes = RequestAttributes(
        data_sensitivity=sensitivity or key.sensitivity_floor,  # type: ignore[arg-type]
        quality_tier=quality or key.quality_tier,  # type: ignore[arg-type]
        budget_class=key.budget_class,
    )

    async def run() -> RequestResult:
        client = await StellwerkClient.connect(settings.nats_url)
        async with client:
            return await client.chat(
                [ChatMessage(role="user", content=text)],
                tenant=tenant or key.tenant,
                business_unit=business_unit or key.business_unit,
                user_role=role or key.user_role,
                usecase_class=(usecase or key.usecase_class),  # type: ignore[arg-type]
                attributes=attributes,
                params=GenerationParams(max_tokens=max_tokens),
                timeout_s=timeout,
            )

    try:
        result = asyncio.run(run())
    except DeadlineExceeded as exc:
        err.print("[red]deadline exceeded[/] — no result before the deadline")
        raise typer.Exit(MESH_UNREACHABLE) from exc
    except (NoServersError, OSError) as exc:
        err.print(f"[red]{unreachable(settings.nats_url)}[/]: {type(exc).__name__}")
        raise typer.Exit(MESH_UNREACHABLE) from exc
    output = OutputFormat.json if as_json else output
    if output is OutputFormat.table:
        _print_result(result)
    else:
        _print_document(msgspec.json.encode(result).decode(), output)
    if result.status != "ok":
        raise typer.Exit(4)


def _print_result(result: RequestResult) -> None:
    if result.status == "ok":
        console.print(result.content or "", highlight=False)
    else:
        assert result.error is not None
        err.print(f"[red]{result.status}[/] {result.error.code} at {result.error.stage}: {result.error.message}")
    table = Table(show_header=True, title=f"request {result.request_id}")
    table.add_column("stage")
    table.add_column("decision")
    table.add_column("rule / version")
    for name, decision in (("dlp input", result.dlp_input), ("dlp output", result.dlp_output)):
        if decision is not None:
            entities = ", ".join(f"{e.type}×{e.count}" for e in decision.entities) or "no findings"
            table.add_row(name, f"{decision.action} ({entities}; {decision.derived_sensitivity})",
                          f"{decision.rule_id} @ {decision.policy_version}")
    if result.routing is not None:
        fallbacks = f" → fallbacks {', '.join(result.routing.fallbacks)}" if result.routing.fallbacks else ""
        table.add_row("router", result.routing.route + fallbacks,
                      f"{result.routing.rule_id} @ {result.routing.policy_version}")
    if result.inference is not None:
        info = result.inference
        table.add_row("inference", f"{info.deployment} ({info.model_version})",
                      (f"ttft {info.ttft_ms:.1f} ms, " if info.ttft_ms is not None else "")
                      + f"total {info.latency_ms:.1f} ms")
    if result.usage is not None:
        table.add_row("usage", f"{result.usage.prompt_tokens} prompt + {result.usage.completion_tokens} completion tokens",
                      f"cost {result.cost or 0:.6f} {result.currency or ''}")
    console.print(table)


@app.command()
def status(
    nats_url: NatsUrl = None,
    output: Format = OutputFormat.table,
    as_json: AsJson = False,
) -> None:
    """Live workers per service and each consumer's pending / redelivered counts."""
    from stellwerk.status import collect_status

    settings = _settings(nats_url)
    try:
        report = asyncio.run(collect_status(settings.nats_url))
    except Exception as exc:
        err.print(f"[red]{unreachable(settings.nats_url)}[/]: {type(exc).__name__}")
        raise typer.Exit(MESH_UNREACHABLE) from exc
    output = OutputFormat.json if as_json else output
    if output is not OutputFormat.table:
        _print_document(json.dumps(report), output)
        return
    workers = Table(title="workers")
    workers.add_column("service")
    workers.add_column("live", justify="right")
    workers.add_column("ids")
    for service, ids in sorted(report["workers"].items()):
        workers.add_row(service, str(len(ids)), ", ".join(sorted(ids)))
    consumers = Table(title="consumers")
    for column in ("stream", "consumer", "pending", "ack pending", "redelivered", "pull waiting"):
        consumers.add_column(column, justify="right" if column not in ("stream", "consumer") else "left")
    for c in report["consumers"]:
        consumers.add_row(c["stream"], c["consumer"], str(c["pending"]), str(c["ack_pending"]),
                          str(c["redelivered"]), str(c["waiting"]))
    console.print(workers)
    console.print(consumers)


@policy_app.command("push")
def policy_push(
    directory: Annotated[Path, typer.Argument(help="Policy directory (*.rego, data.json, *_test.json).")],
    nats_url: NatsUrl = None,
    wait: Annotated[float, typer.Option(help="Seconds to collect the routers' acknowledgements.")] = 1.0,
) -> None:
    """Compile and test a routing policy, then install it in every running router without a restart."""
    from nats.errors import NoServersError

    from services.router.cli import push
    from services.runtime.rego import PolicyError
    from stellwerk.policy_push import push_routing_policy

    try:
        source = push(directory)
    except PolicyError as exc:
        err.print(f"[red]policy rejected:[/] {exc}")
        raise typer.Exit(2) from exc
    settings = _settings(nats_url)
    try:
        acks = asyncio.run(push_routing_policy(settings.nats_url, source, wait))
    except (NoServersError, OSError) as exc:
        err.print(f"[red]{unreachable(settings.nats_url)}[/]: {type(exc).__name__}")
        raise typer.Exit(MESH_UNREACHABLE) from exc
    accepted = [a for a in acks if a.accepted and a.version == source.version]
    console.print(f"policy {source.version}: installed by {len(accepted)} of {len(acks)} router worker(s)")
    for ack in acks:
        console.print(f"  {ack.worker_id}: {'ok' if ack.accepted else 'REJECTED'} (in force: {ack.version})")
    if not acks or len(accepted) != len(acks):
        raise typer.Exit(1)


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="Output directory.")]) -> None:
    """Write JSON Schema for every event and an AsyncAPI document of the subjects."""
    from schemas.export import export_all

    written = export_all(directory)
    for path in written:
        console.print(str(path))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
