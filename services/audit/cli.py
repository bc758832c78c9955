"""``stellwerk audit``: verify, show, replay and export the audit trail.

Every command reads the AUDIT stream (or, with ``--stream``, a copy of it) over NATS; ``verify``
also reads an export file. Heavy imports stay inside the commands so ``stellwerk --help`` is fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from services.kernel.cli_conventions import run_on_mesh

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from rich.table import Table

    from services.audit.query import Selection
    from services.audit.stored import StoredMsg
    from services.audit.verify import VerifyReport

app = typer.Typer(help="Audit trail: verify the hash chains, show a request, replay, export.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)

T = TypeVar("T")

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="STELLWERK_NATS_URL", help="NATS server URL.")
]
Stream = Annotated[str, typer.Option("--stream", help="Stream to read: AUDIT or a copy of it.")]
Since = Annotated[str | None, typer.Option("--since", help="From this time: ISO 8601 or an age such as 90m, 24h, 7d.")]
Until = Annotated[str | None, typer.Option("--until", help="Up to this time: ISO 8601 or an age.")]
Tenant = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
DEFAULT_URL = "nats://127.0.0.1:4222"


class ReplayFormat(StrEnum):
    jsonl = "jsonl"
    table = "table"


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


def _when(text: str | None, option: str) -> datetime | None:
    from services.audit.query import parse_when

    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not a time or an age: {text!r}", param_hint=option) from exc


def _selection(since: str | None, until: str | None, tenant: str | None) -> Selection:
    from services.audit.query import Selection

    return Selection(since=_when(since, "--since"), until=_when(until, "--until"), tenant=tenant)


def _with_stream(nats_url: str, work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    from services.runtime.bus import connect

    async def run() -> T:
        nc = await connect(nats_url, "stellwerk-audit", persistent=False)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return run_on_mesh(nats_url, run())


@app.command()
def verify(
    since: Since = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Only this partition (tenant token).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Verify an export (JSONL or .parquet) instead of a stream.")] = None,
    output: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    stream: Stream = "AUDIT",
    nats_url: NatsUrl = DEFAULT_URL,
    public_keys: Annotated[list[Path] | None, typer.Option(
        "--public-key", help="Ed25519 public key (PEM) the seals must verify with; repeat for rotated keys.",
    )] = None,
) -> None:
    """Recompute every chain and check the sealed checkpoints; exit 1 at the first break.

    With --since, each partition is checked from its last checkpoint before that time.
    Seals are Ed25519 signatures: give the public key with --public-key (or
    STELLWERK_AUDIT_SEAL_PUBLIC_KEY_FILE). Checkpoints sealed earlier with the HMAC secret
    verify when STELLWERK_AUDIT_SEAL_KEY is set here too. With any key given, every checkpoint
    must verify under one of them.
    """
    from services.audit.settings import AuditSettings
    from services.audit.trail import verify_file, verify_stream

    try:
        key = AuditSettings().keyring(public_keys or ())
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read the seal verification key: {exc}", err=True)
        raise typer.Exit(2) from exc
    if file is not None:
        import msgspec

        try:
            report = verify_file(file, partition=partition, key=key)
        except (msgspec.DecodeError, ValueError, KeyError) as exc:
            typer.echo(f"error: {file} is not an audit export (a line does not parse)", err=True)
            raise typer.Exit(1) from exc
    else:
        moment = _when(since, "--since")
        report = _with_stream(
            nats_url, lambda js: verify_stream(js, stream, partition=partition, since=moment, key=key)
        )
    _print_report(report, output)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: VerifyReport, output: ReportFormat) -> None:
    if output is ReportFormat.json:
        typer.echo(json.dumps({
            "ok": report.ok,
            "records": report.records,
            "checkpoints": report.checkpoints,
            "unverifiable_seals": report.unverifiable_seals,
            "partitions": [
                {
                    "partition": p.partition, "records": p.records, "first_seq": p.first_seq,
                    "last_seq": p.last_seq, "anchored_at": p.anchored_at,
                    "checkpoints_matched": p.checkpoints_matched,
                    "first_break": None if p.first_break is None
                    else {"seq": p.first_break.seq, "problem": p.first_break.problem},
                }
                for p in report.partitions
            ],
        }))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("partition", "records", "from", "to", "checkpoints", "status")
    for p in report.partitions:
        status = "[green]ok[/]" if p.first_break is None else (
            f"[red]BROKEN at record {p.first_break.seq}: {p.first_break.problem}[/]"
        )
        start = "genesis" if not p.anchored_at else f"checkpoint {p.anchored_at}"
        table.add_row(p.partition, str(p.records), start, str(p.last_seq or "-"), str(p.checkpoints_matched), status)
    console = Console()
    console.print(table)
    unverifiable = (f"; {report.unverifiable_seals} seals not checked (no key given)"
                    if report.unverifiable_seals else "")
    verdict = "[green]intact[/]" if report.ok else "[red]broken[/]"
    console.print(f"{report.records} records, {report.checkpoints} checkpoints{unverifiable}: {verdict}")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for seal-signing.pem and seal-public.pem.")] = Path("."),
) -> None:
    """Make an Ed25519 key pair for checkpoint seals.

    seal-signing.pem (mode 0600) goes only to the audit service
    (STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE); seal-public.pem to every verifier.
    """
    from services.audit.checkpoint import Ed25519Signer

    signer = Ed25519Signer.generate()
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "seal-signing.pem", out / "seal-public.pem"
    if private.exists():
        typer.echo(f"error: {private} exists; move it away first (rotation: docs/audit.md)", err=True)
        raise typer.Exit(1)
    private.touch(mode=0o600)
    private.write_bytes(signer.private_pem())
    public.write_bytes(signer.public_pem())
    typer.echo(f"key id {signer.key_id}: signing key {private}, public key {public}")


@app.command("end-user")
def end_user(
    user: Annotated[str, typer.Argument(help="The end user's id as the application sends it ('-': read it from "
                                             "stdin, out of the shell history).")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the end user belongs to.")],
    config: Annotated[Path | None, typer.Option("--config", envvar="STELLWERK_CONFIG_FILE",
                                                help="Platform config (its end_user_hash_key).")] = None,
) -> None:
    """The pseudonym an end user has in the audit trail and the usage events (issue 14): "who
    asked" for an auditor who holds the end_user_hash_key. Search with it: --format jsonl output
    of show/replay, or finops report --by user."""
    from services.kernel.end_user import MAX_ID_CHARS, end_user_hash
    from services.runtime.settings import DEFAULT_CONFIG, load_config

    given = sys.stdin.readline().strip() if user == "-" else user
    if not 1 <= len(given) <= MAX_ID_CHARS:
        typer.echo(f"error: an end user id has 1 to {MAX_ID_CHARS} characters", err=True)
        raise typer.Exit(2)
    try:
        key = load_config((config or DEFAULT_CONFIG).resolve()).end_user_key()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(end_user_hash(tenant, given, key))


@app.command()
def show(
    request_id: Annotated[str, typer.Argument(help="The request id (x-stellwerk-request-id).")],
    since: Since = None,
    until: Until = None,
    tenant: Tenant = None,
    output: Annotated[ReplayFormat, typer.Option("--format")] = ReplayFormat.table,
    stream: Stream = "AUDIT",
    nats_url: NatsUrl = DEFAULT_URL,
) -> None:
    """The story of one request: every stage's decision in order, with timings.

    Scans the chain (there is no index by request): --since and --tenant make it faster.
    """
    from schemas.events import encode
    from services.audit.story import story
    from services.audit.trail import request_records

    selection = _selection(since, until, tenant)
    records = _with_stream(nats_url, lambda js: request_records(js, stream, request_id, selection))
    if not records:
        typer.echo(f"no audit records for request {request_id}", err=True)
        raise typer.Exit(1)
    steps = story(records)
    if output is ReplayFormat.jsonl:
        by_seq = {(r.partition, r.seq): r for r in records}
        for step in steps:
            sys.stdout.buffer.write(encode(by_seq[(step.partition, step.seq)]) + b"\n")
        return
    from rich.console import Console
    from rich.table import Table

    first = records[0].event
    table = Table("+ms", "Δms", "stage", "outcome", "decision", "record", title=(
        f"request {request_id} · tenant {first.tenant} · {first.business_unit}/{first.user_role} · "
        f"{first.usecase_class} · started {steps[0].occurred_at.isoformat()}"
    ))
    for step in steps:
        table.add_row(f"{step.since_start_ms:.1f}", f"{step.since_previous_ms:.1f}", step.stage, step.outcome,
                      step.detail, f"{step.partition}#{step.seq}")
    Console().print(table)


@app.command()
def replay(
    since: Since = None,
    until: Until = None,
    tenant: Tenant = None,
    subject: Annotated[str | None, typer.Option(
        "--subject", help="records (default), checkpoints, events, all, a stage name, or a NATS subject filter."
    )] = None,
    output: Annotated[ReplayFormat, typer.Option("--format")] = ReplayFormat.jsonl,
    stream: Stream = "AUDIT",
    nats_url: NatsUrl = DEFAULT_URL,
) -> None:
    """Replay stored audit messages in order, as JSONL (to feed another system) or a table."""
    from services.audit.query import resolve_subject
    from services.audit.stored import to_line
    from services.audit.trail import replay as replay_trail

    selection = _selection(since, until, tenant)
    filter_subject = resolve_subject(subject, tenant)
    if output is ReplayFormat.jsonl:
        out = sys.stdout.buffer

        def emit(msg: StoredMsg) -> None:
            out.write(to_line(msg))

        _with_stream(nats_url, lambda js: replay_trail(js, stream, filter_subject, selection, emit))
        out.flush()
        return
    from rich.console import Console

    rows: list[StoredMsg] = []
    _with_stream(nats_url, lambda js: replay_trail(js, stream, filter_subject, selection, rows.append))
    Console().print(_table(rows))


def _table(rows: list[StoredMsg]) -> Table:
    import msgspec
    from rich.table import Table

    from services.audit.stored import kind_of, to_datetime

    table = Table("stream seq", "stored", "kind", "chain", "request", "stage", "outcome", "decision")
    for row in rows:
        kind = kind_of(row.subject)
        stored = to_datetime(row.time_ns).isoformat(timespec="milliseconds")
        try:
            cells = _cells(row, kind)
        except msgspec.DecodeError:
            cells = ("", "", "", "", "[red]malformed[/]")
        table.add_row(str(row.seq), stored, kind, *cells)
    return table


def _cells(row: StoredMsg, kind: str) -> tuple[str, str, str, str, str]:
    """chain position, request, stage, outcome, decision of one stored message."""
    from schemas.events import AuditCheckpoint, AuditEvent, AuditRecord, decode
    from services.audit.story import describe

    if kind == "checkpoint":
        cp = decode(row.data, AuditCheckpoint)
        return f"{cp.partition}#{cp.seq}", "", "", "", f"head={cp.head_hash[:16]} seal={cp.seal_alg}"
    if kind == "record":
        record = decode(row.data, AuditRecord)
        event, chain = record.event, f"{record.partition}#{record.seq}"
    elif kind == "event":
        event, chain = decode(row.data, AuditEvent), ""
    else:
        return "", "", "", "", row.subject
    return chain, event.request_id, event.stage, event.outcome, describe(event)


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="Where to write: JSONL, or Parquet with --parquet.")],
    since: Annotated[str, typer.Option("--since", help="From this time: ISO 8601 or an age.")],
    until: Annotated[str, typer.Option("--until", help="Up to this time: ISO 8601 or an age.")],
    tenant: Tenant = None,
    parquet: Annotated[bool, typer.Option("--parquet", help="Write Parquet instead of JSONL.")] = False,
    stream: Stream = "AUDIT",
    nats_url: NatsUrl = DEFAULT_URL,
) -> None:
    """Evidence for an auditor: chained records and sealed checkpoints of a time window.

    Each partition starts at its last checkpoint before --since, so the file verifies on its
    own: ``stellwerk audit verify --file FILE``.
    """
    from services.audit.export import JsonlWriter, ParquetWriter
    from services.audit.trail import export_messages

    selection = _selection(since, until, tenant)
    if parquet:
        writer = ParquetWriter(file)
        records, checkpoints = _with_stream(nats_url, lambda js: export_messages(js, stream, selection, writer))
        writer.close()
    else:
        with file.open("wb") as handle:
            records, checkpoints = _with_stream(
                nats_url, lambda js: export_messages(js, stream, selection, JsonlWriter(handle))
            )
    typer.echo(f"wrote {records} records and {checkpoints} checkpoints to {file}", err=True)
