"""``stellwerk finops …``: cost reports, budgets, rebuild, price cross-check.

report            tokens, GPU-seconds, cost, cost per 1k tokens, local vs API share, budget bars
budget set        create or change a budget (KV ``budgets`` ``budget.<id>``; audited)
budget list       budgets with their state (consumption bar, level, action in force)
budget reset      forgive the current period's consumption so far (``reset.<id>``; audited)
budget delete     remove a budget set at run time (a config budget is seeded again at start)
rebuild           replay USAGE into KV ``budgets`` (after a KV loss); ``--dry-run`` compares only
prices            the price table, GPU-hour rates and the LiteLLM cross-check (offline)

Heavy imports (nats, the ledger, LiteLLM) happen inside the commands.
"""

from __future__ import annotations

import json
import sys
import uuid
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.console import Console

from schemas.vocabulary import UsecaseClass
from services.kernel.cli_conventions import run_on_mesh

if TYPE_CHECKING:
    from nats.aio.client import Client

    from services.finops.settings import FinOpsConfig
    from services.runtime.settings import PlatformConfig

app = typer.Typer(help="FinOps: cost reports, budgets, rebuild, price cross-check.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
budget_app = typer.Typer(help="Budgets: set, list, reset (stored in KV, audited).", no_args_is_help=True,
                         pretty_exceptions_show_locals=False)
app.add_typer(budget_app, name="budget")
console = Console()
err = Console(stderr=True)

DEFAULT_NATS = "nats://127.0.0.1:4222"


class By(StrEnum):
    usecase = "usecase"
    tenant = "tenant"
    business_unit = "business_unit"
    model = "model"
    route = "route"
    deployment = "deployment"
    user = "user"  # the end user's pseudonym (issue 14)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ListFormat(StrEnum):
    table = "table"
    json = "json"


class Scope(StrEnum):
    tenant = "tenant"
    business_unit = "business_unit"
    usecase = "usecase"
    endpoint = "endpoint"
    end_user = "end_user"


class PeriodKind(StrEnum):
    day = "day"
    month = "month"


class Action(StrEnum):
    downgrade = "downgrade"
    force_local = "force_local"
    block_noncritical = "block_noncritical"


NatsUrl = Annotated[
    str,
    typer.Option("--nats-url", envvar="STELLWERK_NATS_URL", help="NATS server URL (env STELLWERK_NATS_URL)."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="STELLWERK_CONFIG_FILE", help="Platform config file (YAML)."),
]
Actor = Annotated[str | None, typer.Option(help="Who makes the change, as audited (default: $STELLWERK_ACTOR or the "
                                               "OS user).")]


def _config(path: Path | None) -> PlatformConfig:
    from services.runtime.settings import DEFAULT_CONFIG, load_config

    return load_config((path or DEFAULT_CONFIG).resolve())


def _finops(path: Path | None) -> FinOpsConfig:
    """FinOps' own sections of the config file (price table, GPU classes, budgets)."""
    from services.finops.settings import FinOpsConfig
    from services.runtime.settings import DEFAULT_CONFIG

    return FinOpsConfig.load((path or DEFAULT_CONFIG).resolve())


def _actor(given: str | None) -> str:
    """The operator a budget change is recorded under (issue 14): ``--actor``,
    ``$STELLWERK_ACTOR``, the OS user — as for keys and policies; exit 2 if no identifier."""
    from services.kernel.cli_conventions import INVALID_INPUT, operator_actor

    try:
        return operator_actor(given)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(INVALID_INPUT) from exc


async def _connect(url: str) -> Client:
    from services.runtime.bus import connect, ensure_topology

    nc = await connect(url, "stellwerk-finops-cli", persistent=False)
    await ensure_topology(nc.jetstream())
    return nc


# --- report ----------------------------------------------------------------------------------


@app.command()
def report(
    by: Annotated[By, typer.Option("--by", help="Group by this attribute.")] = By.usecase,
    period: Annotated[
        str,
        typer.Option(help="today | yesterday | month | last-month | Nd | all | YYYY-MM | YYYY-MM-DD[..YYYY-MM-DD]"),
    ] = "month",
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    nats_url: NatsUrl = DEFAULT_NATS,
    config: ConfigOpt = None,
) -> None:
    """Cost report from the USAGE stream: tokens, GPU-seconds, cost, cost per 1k tokens,
    local vs API share, and each budget's consumption in its current period."""
    from zoneinfo import ZoneInfo

    from schemas.events import utcnow
    from services.finops.report import parse_period, render_csv, render_table

    platform = _config(config)
    tz = ZoneInfo(platform.finops_timezone)
    try:
        chosen = parse_period(period, utcnow(), tz)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    result = run_on_mesh(nats_url, _report(nats_url, platform, _finops(config), by.value, chosen))
    if format is Format.json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    elif format is Format.csv:
        typer.echo(render_csv(result), nl=False)
    else:
        render_table(result, console)


async def _report(url: str, config: PlatformConfig, finops: FinOpsConfig, by: Any, period: Any) -> Any:
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from schemas.events import utcnow
    from schemas.streams import KV_BUDGETS
    from services.finops.ledger import Replay, budget_state, new_totals, period_key, period_start
    from services.finops.pricing import PriceBook
    from services.finops.replay import read_usage
    from services.finops.report import aggregate
    from services.finops.reserved import reserved_deployments, reserved_use
    from services.finops.store import config_budgets, load_budget_book

    tz = ZoneInfo(config.finops_timezone)
    now = utcnow()
    month_start = period_start(period_key(now, "month", tz), tz)
    start = min(period.start, month_start) if period.start else None
    prices = PriceBook(finops, config.deployments, config.currency)
    replay = Replay(config.currency, tz)  # deduplicates by call id; also yields budget totals
    items = []
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        # Publish time trails the event time; an hour of slack keeps late publishers in.
        async for seq, usage in read_usage(js, start_time=start - timedelta(hours=1) if start else None):
            charge = prices.charge(usage)
            if replay.add(seq, usage, charge):
                items.append((usage, charge))
        book = await load_budget_book(await js.key_value(KV_BUDGETS))
    finally:
        await nc.close()
    book.add_missing(config_budgets(finops.budgets, config.currency))  # not yet seeded by a worker: the config's terms
    local = {d.name for d in config.deployments if d.provider == "hosted_vllm" or d.gpu_share > 0}
    local |= {e.deployment for e in finops.price_table.entries if e.gpu_class}
    result = aggregate(items, by=by, period=period, currency=config.currency, local_deployments=local)
    if reserved_deployments(config):
        # Fixed cost is booked up to now, never ahead; "all" starts at the first call.
        first = min((u.occurred_at for u, _ in items), default=now)
        until = min(period.end, now) if period.end else now
        result.reserved = reserved_use(config, items, period.start or first, until, tz)
    for key, budgets in sorted(book.index().items()):
        doc = replay.docs.get(key) or new_totals(key, config.currency)
        result.budgets.extend(budget_state(doc, b, now, tz) for b in budgets)
    return result


# --- budgets ---------------------------------------------------------------------------------


@budget_app.command("set")
def budget_set(
    budget_id: Annotated[str, typer.Argument(help="Budget id ([A-Za-z0-9_-]).")],
    scope: Annotated[Scope, typer.Option(help="What the budget covers.")],
    limit: Annotated[float, typer.Option(help="Amount per period, in the platform currency.")],
    scope_id: Annotated[str | None, typer.Option(help="Tenant, business unit, use case class, route/deployment, "
                                                       "or an end user's pseudonym (the hash).")] = None,
    end_user: Annotated[str | None, typer.Option(help="--scope end_user: the end user's id, hashed here with the "
                                                      "platform's end_user_hash_key (needs --tenant); never stored. "
                                                      "'-' reads it from stdin, out of the shell history.")] = None,
    tenant: Annotated[str | None, typer.Option(help="--end-user: the tenant the end user belongs to.")] = None,
    period: Annotated[PeriodKind, typer.Option(help="Budget period.")] = PeriodKind.month,
    action: Annotated[Action, typer.Option(help="What the router does once the act threshold is reached.")] = Action.downgrade,
    warn_pct: Annotated[float, typer.Option(help="Alert at this share of the limit (%).")] = 80.0,
    act_pct: Annotated[float, typer.Option(help="Act at this share of the limit (%).")] = 100.0,
    actor: Actor = None,
    nats_url: NatsUrl = DEFAULT_NATS,
    config: ConfigOpt = None,
) -> None:
    """Create or change a budget. FinOps workers pick it up at once; the change is audited."""
    who = _actor(actor)
    import msgspec

    from services.finops.ledger import BudgetDef
    from services.finops.settings import BudgetConfig

    platform = _config(config)
    if end_user is not None:  # issue 14: the pseudonym the mesh books the user's calls under
        from services.kernel.end_user import end_user_hash

        if scope is not Scope.end_user or not tenant or scope_id:
            err.print("[red]invalid budget:[/] --end-user goes with --scope end_user and --tenant, without --scope-id")
            raise typer.Exit(2)
        given = sys.stdin.readline().strip() if end_user == "-" else end_user
        if not given:
            err.print("[red]invalid budget:[/] the end user's id is empty")
            raise typer.Exit(2)
        try:
            scope_id = end_user_hash(tenant, given, platform.end_user_key())
        except ValueError as exc:
            err.print(f"[red]invalid budget:[/] {exc}")
            raise typer.Exit(2) from exc
    if not scope_id:
        err.print("[red]invalid budget:[/] --scope-id is required (or --end-user with --tenant)")
        raise typer.Exit(2)
    try:
        BudgetConfig(id=budget_id, scope=scope.value, scope_id=scope_id, period=period.value, limit=limit,
                     warn_pct=warn_pct, act_pct=act_pct, action=action.value)
        if scope is Scope.usecase and scope_id not in get_args(UsecaseClass):
            raise ValueError(f"unknown use case class '{scope_id}'")
        if warn_pct > act_pct:
            raise ValueError("--warn-pct must not exceed --act-pct")
    except ValueError as exc:
        err.print(f"[red]invalid budget:[/] {exc}")
        raise typer.Exit(2) from exc
    definition = BudgetDef(
        budget_id=budget_id, scope=scope.value, scope_id=scope_id, period=period.value, limit=limit,
        warn_pct=warn_pct, act_pct=act_pct, action=action.value, currency=platform.currency, source="cli",
    )

    async def run() -> None:
        from schemas import subjects
        from schemas.events import encode
        from schemas.streams import KV_BUDGETS
        from services.finops.replay import budget_set_audit
        from services.finops.store import budget_key

        request_id = f"budget-{uuid.uuid4().hex}"
        nc = await _connect(nats_url)
        try:
            js = nc.jetstream()
            audit = budget_set_audit(definition, who, request_id)
            await js.publish(subjects.audit("finops"), encode(audit), headers={"Nats-Msg-Id": f"audit:{request_id}"})
            await (await js.key_value(KV_BUDGETS)).put(budget_key(budget_id), msgspec.json.encode(definition))
        finally:
            await nc.close()

    run_on_mesh(nats_url, run())
    console.print(
        f"budget {budget_id}: {scope.value}:{scope_id} {limit:g} {platform.currency}/{period.value}, "
        f"warn {warn_pct:g} %, {action.value} at {act_pct:g} %"
    )


@budget_app.command("list")
def budget_list(
    format: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
    nats_url: NatsUrl = DEFAULT_NATS,
    config: ConfigOpt = None,
) -> None:
    """Every budget with its consumption this period, level and the action in force."""
    import msgspec

    platform = _config(config)
    rows = run_on_mesh(nats_url, _budget_rows(nats_url, platform))
    if format is ListFormat.json:
        typer.echo(json.dumps([
            {"definition": msgspec.to_builtins(d), "state": msgspec.to_builtins(s)} for d, s in rows
        ], indent=2))
        return
    from services.finops.report import render_budgets

    if rows:
        render_budgets([s for _, s in rows], console)
    else:
        console.print("no budgets")


async def _budget_rows(url: str, config: PlatformConfig) -> list[Any]:
    from zoneinfo import ZoneInfo

    from schemas.events import utcnow
    from schemas.streams import KV_BUDGETS
    from services.finops.ledger import budget_state
    from services.finops.store import load_budget_book, read_totals

    tz, now = ZoneInfo(config.finops_timezone), utcnow()
    nc = await _connect(url)
    try:
        kv = await nc.jetstream().key_value(KV_BUDGETS)
        book = await load_budget_book(kv)
        rows: list[tuple[Any, Any]] = []
        for key, budgets in sorted(book.index().items()):
            totals, _ = await read_totals(kv, key, config.currency)  # as booked so far
            rows.extend((b[0], budget_state(totals, b, now, tz)) for b in budgets)
        return sorted(rows, key=lambda row: row[0].budget_id)
    finally:
        await nc.close()


@budget_app.command("reset")
def budget_reset(
    budget_id: Annotated[str, typer.Argument(help="Budget id.")],
    actor: Actor = None,
    nats_url: NatsUrl = DEFAULT_NATS,
    config: ConfigOpt = None,
) -> None:
    """Start the budget's current period afresh: what was spent so far no longer counts."""
    who = _actor(actor)
    platform = _config(config)

    async def run() -> tuple[str, float]:
        from zoneinfo import ZoneInfo

        import msgspec
        from nats.js.errors import KeyNotFoundError

        from schemas import subjects
        from schemas.events import encode, utcnow
        from schemas.streams import KV_BUDGETS
        from services.finops.ledger import BudgetDef, BudgetReset, period_key
        from services.finops.replay import budget_reset_audit
        from services.finops.store import budget_key, read_totals, reset_key

        nc = await _connect(nats_url)
        try:
            js = nc.jetstream()
            kv = await js.key_value(KV_BUDGETS)
            try:
                definition = msgspec.json.decode((await kv.get(budget_key(budget_id))).value or b"", type=BudgetDef)
            except (KeyNotFoundError, msgspec.DecodeError):
                err.print(f"[red]no budget '{budget_id}'[/]")
                raise typer.Exit(1) from None
            now = utcnow()
            period = period_key(now, definition.period, ZoneInfo(platform.finops_timezone))
            totals, _ = await read_totals(kv, definition.scope_key, platform.currency)
            bucket = totals.bucket(definition.period)
            baseline = bucket.counters.cost_nanos if bucket.period == period else 0
            reset = BudgetReset(budget_id=budget_id, period=period, baseline_nanos=baseline, at=now)
            request_id = f"budget-{uuid.uuid4().hex}"
            audit = budget_reset_audit(definition, reset, who, request_id)
            await js.publish(subjects.audit("finops"), encode(audit), headers={"Nats-Msg-Id": f"audit:{request_id}"})
            await kv.put(reset_key(budget_id), msgspec.json.encode(reset))
            return period, baseline / 1e9
        finally:
            await nc.close()

    period, forgiven = run_on_mesh(nats_url, run())
    console.print(f"budget {budget_id}: period {period} restarts; {forgiven:,.4f} {platform.currency} forgiven")


@budget_app.command("delete")
def budget_delete(
    budget_id: Annotated[str, typer.Argument(help="Budget id.")],
    actor: Actor = None,
    nats_url: NatsUrl = DEFAULT_NATS,
) -> None:
    """Remove a budget; its scope's state goes with it. Audited."""
    who = _actor(actor)

    async def run() -> None:
        import msgspec
        from nats.js.errors import KeyNotFoundError

        from schemas import subjects
        from schemas.events import encode, utcnow
        from schemas.streams import KV_BUDGETS
        from services.finops.ledger import BudgetDef
        from services.finops.replay import budget_deleted_audit
        from services.finops.store import budget_key, reset_key

        nc = await _connect(nats_url)
        try:
            js = nc.jetstream()
            kv = await js.key_value(KV_BUDGETS)
            try:
                definition = msgspec.json.decode((await kv.get(budget_key(budget_id))).value or b"", type=BudgetDef)
            except (KeyNotFoundError, msgspec.DecodeError):
                err.print(f"[red]no budget '{budget_id}'[/]")
                raise typer.Exit(1) from None
            request_id = f"budget-{uuid.uuid4().hex}"
            audit = budget_deleted_audit(definition, who, request_id, utcnow())
            await js.publish(subjects.audit("finops"), encode(audit), headers={"Nats-Msg-Id": f"audit:{request_id}"})
            await kv.delete(budget_key(budget_id))
            try:
                await kv.get(reset_key(budget_id))
                await kv.delete(reset_key(budget_id))
            except KeyNotFoundError:
                pass
        finally:
            await nc.close()

    run_on_mesh(nats_url, run())
    console.print(f"budget {budget_id} deleted")


# --- rebuild ---------------------------------------------------------------------------------


@app.command()
def rebuild(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only compare the KV with the replay.")] = False,
    nats_url: NatsUrl = DEFAULT_NATS,
    config: ConfigOpt = None,
) -> None:
    """Replay the USAGE stream (and the audited budget changes) into KV ``budgets``."""
    platform, finops = _config(config), _finops(config)

    async def run() -> tuple[Any, list[str]]:
        from zoneinfo import ZoneInfo

        from services.finops.pricing import PriceBook
        from services.finops.rebuild import Rebuilder, differences, live_documents
        from services.finops.store import config_budgets

        nc = await _connect(nats_url)
        try:
            js = nc.jetstream()
            prices = PriceBook(finops, platform.deployments, platform.currency)
            seeds = config_budgets(finops.budgets, platform.currency)
            rebuilder = Rebuilder(js, prices, seeds, ZoneInfo(platform.finops_timezone))
            rebuilt = await rebuilder.compute()
            totals, states = await live_documents(js, platform.currency)
            diffs = differences(rebuilt, totals, states)
            if not dry_run:
                await rebuilder.write(rebuilt)
            return rebuilt, diffs
        finally:
            await nc.close()

    rebuilt, diffs = run_on_mesh(nats_url, run())
    console.print(
        f"replayed {rebuilt.events:,} usage events through seq {rebuilt.through} "
        f"({rebuilt.duplicates} duplicate calls skipped); {len(rebuilt.definitions)} budgets"
    )
    if diffs:
        console.print(f"{len(diffs)} KV entries differed from the replay: {', '.join(diffs[:20])}"
                      + (" …" if len(diffs) > 20 else ""))
    else:
        console.print("the KV matched the replay")
    console.print("dry run: nothing written" if dry_run else f"wrote {len(rebuilt.written)} scope documents")


# --- prices ----------------------------------------------------------------------------------


@app.command()
def prices(config: ConfigOpt = None) -> None:
    """The price table, GPU-hour rates from the on-prem formula, and the LiteLLM cross-check."""
    from rich.table import Table

    from services.finops.crosscheck import cross_check
    from services.finops.pricing import PriceBook

    platform, finops = _config(config), _finops(config)
    book = PriceBook(finops, platform.deployments, platform.currency)
    gpus = Table(title=f"GPU-hour rate per GPU class ({platform.currency} per GPU)", title_justify="left")
    gpus.add_column("per year")
    for g in book.gpu_costs.values():
        gpus.add_column(g.name, justify="right")
    costs = list(book.gpu_costs.values())
    for label, attr in (("CAPEX amortisation", "amortisation"), ("maintenance", "maintenance"),
                        ("energy", "energy"), ("cooling", "cooling"), ("data centre", "datacenter"),
                        ("operations", "operations"), ("total", "per_year")):
        gpus.add_row(label, *(f"{getattr(g, attr):,.2f}" for g in costs), style="bold" if attr == "per_year" else None)
    gpus.add_row("÷ productive GPU-hours", *(f"{g.productive_hours:,.0f} ({g.utilisation:.0%})" for g in costs))
    gpus.add_row("= rate per GPU-hour", *(f"{g.hourly_rate:.4f}" for g in costs), style="bold")
    console.print(gpus)
    table = Table(title=f"Prices ({platform.currency})", title_justify="left")
    for name in ("deployment", "valid from", "source", "input / 1k", "output / 1k", "GPU-h rate"):
        table.add_column(name)
    for p in book.prices():
        table.add_row(p.deployment, "—" if p.source == "deployment" else p.valid_from.isoformat(), p.source,
                      f"{p.input_per_1k:g}", f"{p.output_per_1k:g}", f"{p.gpu_hour_rate:.4f}")
    console.print(table)
    checks = cross_check(finops.price_table)
    check_table = Table(title="Cross-check against LiteLLM", title_justify="left")
    for name in ("deployment", "valid from", "arithmetic", "LiteLLM model", "list in / 1k", "list out / 1k",
                 "deviation", "result"):
        check_table.add_column(name)
    for c in checks:
        check_table.add_row(
            c.deployment, c.valid_from, "ok" if c.arithmetic_ok else "MISMATCH", c.litellm_model or "—",
            "—" if c.list_input_per_1k is None else f"{c.list_input_per_1k:.6g}",
            "—" if c.list_output_per_1k is None else f"{c.list_output_per_1k:.6g}",
            "—" if c.deviation_pct is None else f"{c.deviation_pct:+.1f} %",
            ("ok" if c.ok else "[red]CHECK[/]") + (f" ({c.note})" if c.note else ""),
        )
    console.print(check_table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - ``python -m services.finops.cli``
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
