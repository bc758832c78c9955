"""The ``stellwerk`` command: run the mesh, talk to it, inspect it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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
from services.kernel.cli_conventions import FAILED, INVALID_INPUT, OutputFormat, run_on_mesh
from services.router.cli import app as route_app
from services.runtime.settings import DEFAULT_CONFIG, MeshSettings, load_config
from services.toolgateway.cli import app as tools_app
from services.toolgateway.cli import approvals_app
from stellwerk.rollout_cli import prompts_app, rollout_app

if TYPE_CHECKING:
    from schemas.events import PolicyPushAck
    from schemas.kv import PolicyName

T = TypeVar("T")

# Locals off on every Typer: a crash must never print what a command was handling (a prompt,
# a screened text). The top-level app's setting is the one in force for mounted sub-apps.
app = typer.Typer(help="Stellwerk — governed AI gateway on a NATS mesh.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
schemas_app = typer.Typer(help="Event contracts.", no_args_is_help=True, pretty_exceptions_show_locals=False)
policy_app = typer.Typer(help="Policy bundles in the mesh: push, history, show, rollback.", no_args_is_help=True,
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
app.add_typer(rollout_app, name="rollout", help="Canary variants rolled back in the mesh: status, restore.")
app.add_typer(prompts_app, name="prompts", help="Prompt templates: check them against their case tables.")
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
    _check_secrets(config_file)
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


def _check_secrets(config_file: Path) -> None:
    """Issue 14: provider keys belong in the environment or a mounted file, not in the config.
    Plaintext is refused before anything starts (exit 2) unless explicitly allowed for local
    development, and then still warned about; so is a missing end-user pseudonym key."""
    import yaml

    from services.runtime.settings import plaintext_allowed, plaintext_refusal, plaintext_secrets

    try:
        raw = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError):
        return  # the mesh's own start reports an unreadable config
    where = plaintext_secrets(raw)
    if where and not plaintext_allowed(raw):
        err.print(f"[red]error:[/] {config_file.name}: {plaintext_refusal(where)}", highlight=False)
        raise typer.Exit(2)
    for place in where:
        err.print(f"[yellow]warning:[/] {place}: secret is plaintext in {config_file.name} (allowed for local "
                  "development); use os.environ/NAME or file:/path (docs/identity.md#secrets-by-reference)",
                  highlight=False)
    if isinstance(raw, dict) and not raw.get("end_user_hash_key"):
        err.print("[yellow]warning:[/] no end_user_hash_key: end users are pseudonymised with an unkeyed hash "
                  "(docs/identity.md#end-users); set one in production", highlight=False)


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

    result = run_on_mesh(settings.nats_url, run(),
                         unanswered={DeadlineExceeded: "deadline exceeded — no result before the deadline"})
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
    report = run_on_mesh(settings.nats_url, collect_status(settings.nats_url))
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


PolicyOption = Annotated[str | None, typer.Option(
    "--policy", help="routing | sensitivity | tools | guard (default: from the directory's <policy>.rego).")]
ActorOption = Annotated[str | None, typer.Option("--actor", help="Who makes the change, as audited (default: "
                                                 "$STELLWERK_ACTOR or the OS user).")]


def _operator(actor: str | None) -> str:
    """Issue 14: the operator a policy change is recorded under, as for keys and budgets."""
    from services.kernel.cli_conventions import operator_actor

    try:
        return operator_actor(actor)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
MessageOption = Annotated[str, typer.Option("--message", "-m", help="Why: recorded with the version.")]
OutputOption = Annotated[OutputFormat, typer.Option("--format", help="table, json or jsonl.")]


def _policy_name(policy: str | None) -> PolicyName | None:
    from services.runtime.policy_bundles import POLICIES

    if policy is None:
        return None
    if policy not in POLICIES:
        err.print(f"[red]unknown policy {policy!r}[/]: one of {', '.join(POLICIES)}")
        raise typer.Exit(INVALID_INPUT)
    return policy  # type: ignore[return-value]


def _on_mesh(nats_url: str | None, work: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    url = _settings(nats_url).nats_url
    return run_on_mesh(url, work(url))


@policy_app.command("push")
def policy_push(
    directory: Annotated[Path, typer.Argument(help="Policy directory (*.rego, data.json, *_test.json).")],
    message: MessageOption = "",
    actor: ActorOption = None,
    policy: PolicyOption = None,
    nats_url: NatsUrl = None,
    wait: Annotated[float, typer.Option(help="Seconds to collect the routers' acknowledgements.")] = 1.0,
) -> None:
    """Compile a policy and run its case tables, store it in the mesh by its content hash (with
    actor and message) and put it in force: every worker loads it at start and follows it.
    A routing policy is also pushed to the running routers, which acknowledge it."""
    from services.runtime.rego import PolicyError
    from stellwerk.policy_push import check_bundle, push_routing_policy, store_bundle

    try:
        name, source = check_bundle(directory, _policy_name(policy))
    except PolicyError as exc:
        err.print(f"[red]policy rejected:[/] {exc}")
        raise typer.Exit(2) from exc
    who = _operator(actor)

    async def work(url: str) -> list[PolicyPushAck]:
        await store_bundle(url, name, source, who, message)
        return await push_routing_policy(url, source, wait) if name == "routing" else []

    acks = _on_mesh(nats_url, work)
    console.print(f"{name} policy {source.version}: stored and in force (by {who})")
    if name != "routing":
        return
    accepted = [a for a in acks if a.accepted and a.version == source.version]
    console.print(f"policy {source.version}: installed by {len(accepted)} of {len(acks)} running router worker(s)"
                  + ("" if acks else "; routers load it when they start"))
    for ack in acks:
        console.print(f"  {ack.worker_id}: {'ok' if ack.accepted else 'REJECTED'} (in force: {ack.version})")
    if len(accepted) != len(acks):
        raise typer.Exit(FAILED)


@policy_app.command("rollback")
def policy_rollback(
    version: Annotated[str, typer.Argument(help="A stored version (sha256:…, or a unique prefix of its digits).")],
    message: MessageOption = "",
    actor: ActorOption = None,
    policy: PolicyOption = None,
    nats_url: NatsUrl = None,
) -> None:
    """Put a stored policy version in force again; every worker follows within a second."""
    from services.runtime.rego import PolicyError
    from stellwerk.policy_push import rollback

    who = _operator(actor)
    try:
        change = _on_mesh(nats_url, lambda url: rollback(url, version, _policy_name(policy), who, message))
    except PolicyError as exc:
        err.print(f"[red]stored version does not load:[/] {exc}")
        raise typer.Exit(FAILED) from exc
    if change is None:
        err.print(f"[red]no stored policy version {version}[/] (stellwerk policy history lists them)")
        raise typer.Exit(FAILED)
    console.print(f"{change.policy} policy {change.version}: in force again (rollback by {who})")


@policy_app.command("history")
def policy_history(
    policy: PolicyOption = None,
    output: OutputOption = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """Every push and rollback: when, which version, who, why; the version in force marked."""
    import msgspec

    from stellwerk.policy_push import history

    changes, in_force = _on_mesh(nats_url, lambda url: history(url, _policy_name(policy)))
    if output is not OutputFormat.table:
        _print_document(msgspec.json.encode(
            {"in_force": in_force, "changes": [msgspec.to_builtins(c) for c in changes]}).decode(), output)
        return
    table = Table(title="policy history")
    for column in ("at", "policy", "action", "version", "actor", "message", ""):
        table.add_column(column)
    for change in changes:
        mark = "in force" if in_force.get(change.policy) == change.version else ""
        table.add_row(change.at.isoformat(timespec="seconds"), change.policy, change.action, change.version,
                      change.actor, change.message, mark)
    console.print(table)


@policy_app.command("show")
def policy_show(
    version: Annotated[str, typer.Argument(help="The version (sha256:…) as the audit trail names it.")],
    policy: PolicyOption = None,
    module: Annotated[str | None, typer.Option("--module", help="Print only this file (e.g. routing.rego, data.json).")] = None,
    output: OutputOption = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """The text of a stored policy version: its modules and data, who pushed it, when, why."""
    import msgspec

    from stellwerk.policy_push import show

    bundle = _on_mesh(nats_url, lambda url: show(url, version, _policy_name(policy)))
    if bundle is None:
        err.print(f"[red]no stored policy version {version}[/]")
        raise typer.Exit(FAILED)
    files = {**bundle.modules, "data.json": json.dumps(bundle.data, indent=2, ensure_ascii=False)}
    if module is not None:
        if module not in files:
            err.print(f"[red]no file {module}[/] in {bundle.version}: {', '.join(files)}")
            raise typer.Exit(FAILED)
        sys.stdout.write(files[module] if files[module].endswith("\n") else files[module] + "\n")
        return
    if output is not OutputFormat.table:
        _print_document(msgspec.json.encode(bundle).decode(), output)
        return
    console.print(f"{bundle.policy} policy {bundle.version}, pushed {bundle.created_at.isoformat(timespec='seconds')} "
                  f"by {bundle.actor}: {bundle.message or '(no message)'}")
    for name, text in files.items():
        console.rule(name)
        console.print(text, markup=False, highlight=False)


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
