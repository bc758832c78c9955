"""``stellwerk rollout`` (canary rollbacks in force) and ``stellwerk prompts`` (prompt templates),
issue 17. See docs/routing.md, "Canary, shadow and prompt templates"."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from nats.js.errors import APIError
from nats.js.kv import KeyValue
from rich.console import Console
from rich.table import Table

from schemas import subjects
from schemas.events import AuditEvent, deadline_in, encode
from schemas.kv import PolicyBundle, RolloutState
from schemas.streams import KV_POLICIES, KV_ROLLOUTS
from services.kernel.cli_conventions import FAILED, INVALID_INPUT, OutputFormat, run_on_mesh
from services.runtime import policy_bundles
from services.runtime.bus import connect, key_value
from services.runtime.prompts import SHIPPED_PROMPTS_DIR, PromptError, check_prompts
from services.runtime.settings import MeshSettings, load_config

console = Console()
err = Console(stderr=True)
# JetStream's "wrong last sequence" codes: nats-py's ``kv.delete(last=…)`` raises them as a bare
# APIError (``update`` maps them to KeyWrongLastSequenceError, ``delete`` does not).
_WRONG_LAST_SEQUENCE = (10071, 10164)

rollout_app = typer.Typer(no_args_is_help=True)
prompts_app = typer.Typer(no_args_is_help=True)

NatsUrl = Annotated[str | None, typer.Option("--nats-url", help="NATS server URL (default: STELLWERK_NATS_URL).")]
Format = Annotated[OutputFormat, typer.Option("--format", help="table, json or jsonl.")]


def _url(nats_url: str | None) -> str:
    return nats_url or MeshSettings().nats_url


async def _states(url: str) -> list[RolloutState]:
    nc = await connect(url, "stellwerk-rollout", persistent=False)
    try:
        kv = await key_value(nc.jetstream(), KV_ROLLOUTS)
        states: list[RolloutState] = []
        try:
            keys = await kv.keys()
        except Exception:  # noqa: BLE001 - nats-py raises NoKeysError on an empty bucket
            return []
        for key in keys:
            entry = await kv.get(key)
            if entry.value:
                states.append(msgspec.json.decode(entry.value, type=RolloutState))
        return states
    finally:
        await nc.close()


async def _audit(
    nc: Any, change_id: str, outcome: str, actor: str, attributes: dict[str, str], version: str | None = None
) -> None:
    """An operator's lifecycle change on the audit trail (stage ``policy``, like policy pushes),
    published *before* the change is made (review 1h): a failed audit leaves nothing changed,
    and ``change_id`` — derived from the change itself — makes a retried change one record."""
    event = AuditEvent(
        request_id=change_id, correlation_id=change_id, deadline=deadline_in(0), tenant="platform",
        business_unit="platform", user_role="operator", usecase_class="chat", stage="policy", outcome=outcome,
        policy_version=version, attributes={**attributes, "actor": actor},
    )
    await nc.jetstream().publish(subjects.audit("policy"), encode(event), headers={"Nats-Msg-Id": change_id})


async def _restore(url: str, route: str, variant: str, actor: str) -> bool:
    nc = await connect(url, "stellwerk-rollout", persistent=False)
    try:
        kv = await nc.jetstream().key_value(KV_ROLLOUTS)
        try:
            entry = await kv.get(f"{route}.{variant}")
        except Exception:  # noqa: BLE001 - not rolled back (KeyNotFound / deleted)
            return False
        if not entry.value or entry.revision is None:
            return False
        # Two restores of the same rollback share the change id: one record, one delete.
        await _audit(nc, f"rollout.restore.{route}.{variant}.{entry.revision}", "variant_restored", actor,
                     {"route": route, "variant": variant})
        return await delete_unchanged(kv, f"{route}.{variant}", entry.revision)
    finally:
        await nc.close()


async def delete_unchanged(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete ``key`` only if it is still at ``revision`` (compare-and-set): of two concurrent
    restores exactly one deletes and audits, and a restore that read an older rollback never
    deletes a newer one. False: the key changed since it was read."""
    try:
        await kv.delete(key, last=revision)
    except APIError as exc:
        if exc.err_code in _WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


@rollout_app.command("status")
def rollout_status(output: Format = OutputFormat.table, nats_url: NatsUrl = None) -> None:
    """The variants rolled back in the mesh: route, variant, who, why, what was measured."""
    url = _url(nats_url)
    states = run_on_mesh(url, _states(url))
    if output is not OutputFormat.table:
        documents = [msgspec.to_builtins(s) for s in states]
        if output is OutputFormat.jsonl:
            for document in documents:
                console.print_json(msgspec.json.encode(document).decode(), indent=None)
        else:
            console.print_json(msgspec.json.encode(documents).decode())
        return
    table = Table(title="rolled-back variants")
    for column in ("at", "route", "variant", "actor", "reason", "requests", "error rate", "p95 ms"):
        table.add_column(column)
    for s in states:
        table.add_row(s.at.isoformat(timespec="seconds"), s.route, s.variant, s.actor, s.reason, str(s.requests),
                      f"{s.error_rate:.1%}", f"{s.p95_latency_ms:.0f}")
    console.print(table)


@rollout_app.command("restore")
def rollout_restore(
    route: Annotated[str, typer.Argument(help="The route, as in the config.")],
    variant: Annotated[str, typer.Argument(help="The rolled-back variant.")],
    actor: Annotated[str | None, typer.Option("--actor", help="Who (default: the OS user).")] = None,
    nats_url: NatsUrl = None,
) -> None:
    """Give a rolled-back variant its configured weight again, on every replica (audited)."""
    from stellwerk.policy_push import actor_id, default_actor

    url = _url(nats_url)
    restored = run_on_mesh(url, _restore(url, route, variant, actor_id(actor) if actor else default_actor()))
    if not restored:
        err.print(f"[red]{route}.{variant} is not rolled back[/]")
        raise typer.Exit(FAILED)
    console.print(f"{route}.{variant}: restored to its configured weight")


@prompts_app.command("check")
def prompts_check(
    directory: Annotated[Path | None, typer.Argument(help="Template directory (default: the config's or the shipped one).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Platform config: its templates must exist.")] = None,
) -> None:
    """Load every ``<usecase>/<name>.md`` and run its ``<name>_test.json`` case table."""
    required: set[str] = set()
    prompts_dir = directory
    if config is not None:
        try:
            platform = load_config(config)
        except (OSError, ValueError) as exc:
            err.print(f"[red]config {config} does not load[/]: {type(exc).__name__}")
            raise typer.Exit(INVALID_INPUT) from exc
        required = set(platform.prompt_templates.values()) | {
            v.prompt_template for r in platform.routes for v in r.variants if v.prompt_template}
        prompts_dir = prompts_dir or platform.prompts_dir
    try:
        templates = check_prompts(prompts_dir or SHIPPED_PROMPTS_DIR, required)
    except PromptError as exc:
        err.print(f"[red]refused[/]: {exc}")
        raise typer.Exit(FAILED) from exc
    for template in templates.values():
        console.print(f"{template.version}  ok", highlight=False)


async def _store_only(url: str, bundle: PolicyBundle) -> None:
    nc = await connect(url, "stellwerk-rollout", persistent=False)
    try:
        kv = await key_value(nc.jetstream(), KV_POLICIES)
        await _audit(nc, f"rollout.stage.{bundle.policy}.{bundle.version}", "policy_staged", bundle.actor,
                     {"policy": bundle.policy}, bundle.version)
        await kv.put(policy_bundles.bundle_key(bundle.policy, bundle.version), msgspec.json.encode(bundle))
    finally:
        await nc.close()


@rollout_app.command("stage-policy")
def rollout_stage_policy(
    directory: Annotated[Path, typer.Argument(help="Routing policy directory (*.rego, data.json, *_test.json).")],
    message: Annotated[str, typer.Option("-m", "--message", help="Why this version.")] = "",
    actor: Annotated[str | None, typer.Option("--actor", help="Who (default: the OS user).")] = None,
    nats_url: NatsUrl = None,
) -> None:
    """Check a routing policy (compile + case tables) and store it in KV policies WITHOUT putting
    it in force: a candidate for ``policy_canary`` in the config (docs/routing.md)."""
    from services.runtime.rego import PolicyError
    from stellwerk.policy_push import actor_id, check_bundle, default_actor

    try:
        name, source = check_bundle(directory, "routing")
    except PolicyError as exc:
        err.print(f"[red]policy rejected:[/] {exc}")
        raise typer.Exit(2) from exc
    who = actor_id(actor) if actor else default_actor()
    bundle = PolicyBundle(policy=name, version=source.version, modules=source.modules, data=source.data,
                          actor=who, message=message)
    url = _url(nats_url)
    run_on_mesh(url, _store_only(url, bundle))
    console.print(f"routing policy {source.version}: stored, not in force (by {who}). As a canary:\n"
                  f"  policy_canary: {{version: \"{source.version}\", weight: 10}}", highlight=False)
