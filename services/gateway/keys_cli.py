"""``stellwerk keys ...`` (mounted by ``stellwerk.cli``): API keys as data (issue 14).

keys create --tenant T --business-unit B --role R [--usecase C] [--expires 30d]
                                 a new key, printed once with its id (only its hash is stored)
keys list                        every key: id, grants, state (valid, expired, revoked, rotated)
keys revoke KEY_ID               refused (401) by every gateway replica within 2 s
keys rotate KEY_ID [--grace 1h]  a new key with the same grants; the old one ends with the grace

Every change is audited (stage ``identity``) with its actor: ``--actor``, default
``$STELLWERK_ACTOR`` or the OS user.

Output: ``--format table|json|jsonl``. Exit codes (services/kernel/cli_conventions.py): 0 done;
1 refused (unknown key, already revoked, ...); 2 invalid input; 3 the mesh is unreachable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar, get_args

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from schemas.events import utcnow
from schemas.kv import KeyRecord
from schemas.vocabulary import UsecaseClass
from services.kernel.cli_conventions import (
    FAILED,
    INVALID_INPUT,
    OutputFormat,
    operator_actor,
    run_on_mesh,
)
from services.runtime.bus import connect, ensure_topology
from services.runtime.keys import KeyChangeRefused, KeyStore, parse_duration, valid_key_id
from services.runtime.settings import MeshSettings

app = typer.Typer(help="API keys as data in the mesh: create, list, revoke, rotate.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server URL (default: STELLWERK_NATS_URL).")]
Format = Annotated[OutputFormat, typer.Option("--format", help="table, json, or jsonl (one object per line).")]
Actor = Annotated[str | None, typer.Option("--actor", help="Who makes the change, as audited "
                                           "(default: $STELLWERK_ACTOR or the OS user).")]


def actor_of(given: str | None) -> str:
    """The operator a change is recorded under: ``--actor``, ``$STELLWERK_ACTOR``, the OS user."""
    try:
        return operator_actor(given)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(INVALID_INPUT) from exc


def _duration(option: str, text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        err.print(f"[red]error:[/] {option}: {exc}")
        raise typer.Exit(INVALID_INPUT) from exc


def _run(nats_url: str | None, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = MeshSettings(**({"nats_url": nats_url} if nats_url else {}))  # type: ignore[arg-type]

    async def main() -> T:
        nc = await connect(settings.nats_url, "stellwerk-cli-keys", persistent=False)
        try:
            js = nc.jetstream()
            await ensure_topology(js)
            return await work(await KeyStore.open(js))
        finally:
            await nc.close()

    try:
        return run_on_mesh(settings.nats_url, main())
    except KeyChangeRefused as exc:
        err.print(f"[red]refused:[/] {exc.reason} ({exc.key_id})")
        raise typer.Exit(FAILED) from exc


def state_of(record: KeyRecord) -> str:
    if record.revoked:
        return "revoked"
    if record.expires_at is not None and utcnow() >= record.expires_at:
        return "expired"
    if record.rotated_to:
        return "rotating"  # valid until its grace ends
    return "valid"


def _view(record: KeyRecord) -> dict[str, Any]:
    return {**msgspec.to_builtins(record), "state": state_of(record)}


def _print_records(records: list[KeyRecord], output: OutputFormat, key: str | None = None) -> None:
    if output is not OutputFormat.table:
        views: list[dict[str, Any]] = [_view(r) for r in records]
        if key is not None:  # a new key (and for a rotation, the old one as it is now)
            views = [{"key": key, **views[0], **({"previous": views[1]} if len(views) > 1 else {})}]
        if output is OutputFormat.jsonl:
            for view in views:
                typer.echo(msgspec.json.encode(view).decode())
        else:
            typer.echo(msgspec.json.encode(views[0] if key is not None else views).decode())
        return
    table = Table()
    for column in ("key id", "tenant", "business unit", "role", "use case", "state", "expires", "created by"):
        table.add_column(column)
    for r in records:
        table.add_row(r.key_id, r.tenant, r.business_unit, r.user_role, r.usecase_class, state_of(r),
                      r.expires_at.isoformat(timespec="seconds") if r.expires_at else "-", r.created_by)
    console.print(table)
    if key is not None:
        console.print(f"key  {key}", highlight=False, soft_wrap=True)
        console.print("[yellow]Shown once: only its hash is stored.[/]")


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the key belongs to.")],
    business_unit: Annotated[str, typer.Option("--business-unit", help="Business unit (teams, budgets).")],
    role: Annotated[str, typer.Option("--role", help="User role (the policies decide on it).")],
    usecase: Annotated[str, typer.Option("--usecase", help="Default use case class.")] = "chat",
    expires: Annotated[str | None, typer.Option("--expires", help="Valid for, e.g. 30d, 12h (default: no expiry).")] = None,
    key_id: Annotated[str | None, typer.Option("--id", help="The key's id (default: key-<random>).")] = None,
    sensitivity_floor: Annotated[str, typer.Option("--sensitivity-floor", help="Lowest data sensitivity.")] = "internal",
    max_quality: Annotated[str, typer.Option("--max-quality", help="Highest quality tier: standard | high.")] = "high",
    max_budget: Annotated[str, typer.Option("--max-budget", help="Highest budget class: low | standard | premium.")] = "standard",
    forward_end_user: Annotated[bool, typer.Option("--forward-end-user", help="May name its end user "
                                                   "(X-Stellwerk-End-User).")] = False,
    owner: Annotated[str | None, typer.Option("--owner", help="The person holding it as single sign-on "
                                              "names them (oidc:<sub>): four eyes counts key and token "
                                              "as one approver.")] = None,
    actor: Actor = None,
    output: Format = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """Create a key; prints it once, with its id."""
    from schemas.vocabulary import BudgetClass, DataSensitivity, QualityTier

    for name, value, allowed in (("--usecase", usecase, UsecaseClass), ("--sensitivity-floor", sensitivity_floor,
                                 DataSensitivity), ("--max-quality", max_quality, QualityTier),
                                 ("--max-budget", max_budget, BudgetClass)):
        if value not in get_args(allowed):
            err.print(f"[red]error:[/] {name} must be one of {', '.join(get_args(allowed))}")
            raise typer.Exit(INVALID_INPUT)
    if key_id is not None and not valid_key_id(key_id):
        err.print("[red]error:[/] --id: 1 to 64 of A-Z a-z 0-9 _ = -")
        raise typer.Exit(INVALID_INPUT)
    who = actor_of(actor)
    valid_for = _duration("--expires", expires)
    try:
        # Identifiers are checked by the record's own decoder before anything is stored.
        work = _create(tenant, business_unit, role, usecase, valid_for, key_id, sensitivity_floor, max_quality,
                       max_budget, forward_end_user, who, owner)
        key, record = _run(nats_url, work)
    except msgspec.ValidationError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(INVALID_INPUT) from exc
    _print_records([record], output, key)


def _create(tenant: str, business_unit: str, role: str, usecase: str, valid_for: timedelta | None,
            key_id: str | None, floor: str, max_quality: str, max_budget: str, forward: bool,
            actor: str, owner: str | None = None) -> Callable[[KeyStore], Awaitable[tuple[str, KeyRecord]]]:
    async def work(store: KeyStore) -> tuple[str, KeyRecord]:
        return await store.create(
            tenant=tenant, business_unit=business_unit, role=role, actor=actor,
            usecase=usecase,  # type: ignore[arg-type]
            expires_in=valid_for, key_id=key_id,
            sensitivity_floor=floor,  # type: ignore[arg-type]
            max_quality_tier=max_quality,  # type: ignore[arg-type]
            max_budget_class=max_budget,  # type: ignore[arg-type]
            forward_end_user=forward,
            owner=owner,
        )

    return work


@app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.")] = None,
    output: Format = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """Every key with its grants and state (never the key: only its hash is stored)."""
    records = _run(nats_url, lambda store: store.all())
    _print_records([r for r in records if tenant is None or r.tenant == tenant], output)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (stellwerk keys list).")],
    actor: Actor = None,
    output: Format = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """Revoke a key: every gateway replica refuses it (401) within 2 s."""
    who = actor_of(actor)
    record = _run(nats_url, lambda store: store.revoke(key_id, who))
    _print_records([record], output)


@app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    grace: Annotated[str, typer.Option("--grace", help="How long the old key stays valid (e.g. 1h; 0s ends it now).")] = "1h",
    actor: Actor = None,
    output: Format = OutputFormat.table,
    nats_url: NatsUrl = None,
) -> None:
    """A new key with the same grants; the old one stays valid until the grace period ends."""
    who = actor_of(actor)
    period = timedelta(0) if grace.strip() in ("0", "0s") else _duration("--grace", grace)
    assert period is not None
    key, new, old = _run(nats_url, lambda store: store.rotate(key_id, who, period))
    _print_records([new, old], output, key)
