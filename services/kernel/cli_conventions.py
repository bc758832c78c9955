"""What every ``stellwerk`` command has in common, so scripts can rely on it.

Output: a command whose output is data takes ``--format table|json|jsonl`` — ``table`` for
people (the default where a person is the usual reader), ``json`` one JSON document,
``jsonl`` one compact JSON object per line (one per item where the output is a list; a
command that also *reads* lines, such as ``dlp check`` and ``route explain``, then reads one
request per line too). A command may offer a subset, or an extra format (``finops report
--format csv``), never another flag for the same thing.

Exit codes (the same in every command; see README "Exit codes"):

    0  done
    1  the command ran and the answer is no: refused, blocked, broken, not found
    2  invalid input or usage (click reports its own usage errors with 2 as well)
    3  the mesh is unreachable: no NATS server at the URL, no worker answering the part of
       the mesh the command needs, or no answer before the deadline

A command that talks to the mesh runs its work through ``run_on_mesh``, the one place that
turns an unreachable mesh into exit 3 and its message.

Imported by ``stellwerk.cli`` and by each service's ``cli.py`` alike, so it imports no service.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import re
from collections.abc import Coroutine, Mapping
from enum import StrEnum
from typing import Any, Final, TypeVar

import typer

T = TypeVar("T")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


OK: Final = 0
FAILED: Final = 1
INVALID_INPUT: Final = 2
MESH_UNREACHABLE: Final = 3


# --- an unreachable mesh: exit 3, one message ------------------------------------------------------

MESH_HINT: Final = "is the mesh running? `stellwerk up` starts one"


def unreachable(url: str) -> str:
    """The one message for an unreachable mesh (the URL, never credentials in it)."""
    return f"cannot reach the mesh at {_without_credentials(url)}"


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    hosts = [host.rpartition("@")[2] for host in rest.split(",")]
    return scheme + sep + ",".join(hosts)


# nats-py's own errors for "no mesh here", by name: the kernel does not import the bus client
# (tests/unit/test_boundaries.py); tests/unit/test_cli_conventions.py holds them to nats-py.
NATS_UNREACHABLE: Final = frozenset({
    "nats.errors.NoServersError",  # no server at the URL (a refused or timed-out connect)
    "nats.errors.ConnectionClosedError",  # the connection went away mid-command
    "nats.errors.NoRespondersError",  # nothing listens where the command asks
    "nats.js.errors.ServiceUnavailableError",  # JetStream does not answer
})


def mesh_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the mesh cannot be reached: those nats-py errors, or any OSError
    (a refused connection, no route, a timeout: nats-py's TimeoutError is a TimeoutError too)."""
    if isinstance(exc, OSError):
        return True
    return any(f"{kind.__module__}.{kind.__qualname__}" in NATS_UNREACHABLE for kind in type(exc).__mro__)


def run_on_mesh(
    url: str,
    work: Coroutine[Any, Any, T],
    *,
    unanswered: Mapping[type[Exception], str] | None = None,
) -> T:
    """Run a command's ``work`` (which connects to the mesh at ``url``) and return its result;
    an unreachable mesh prints one line on stderr and exits ``MESH_UNREACHABLE``.

    ``unanswered``: the command's own ways of getting no answer (no tool gateway, a request's
    deadline), each with its message; checked first, as a deadline is also a TimeoutError.
    Messages name the URL and the exception's type, never its text: that may quote a request.
    """
    own = dict(unanswered or {})
    try:
        return asyncio.run(work)
    except tuple(own) as exc:
        message = next(text for kind, text in own.items() if isinstance(exc, kind))
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(MESH_UNREACHABLE) from exc
    except Exception as exc:
        if not mesh_unreachable(exc):
            raise  # the command's own answer (a refusal, exit 1) or a bug: not ours to hide
        typer.echo(f"error: {unreachable(url)}: {type(exc).__name__} ({MESH_HINT})", err=True)
        raise typer.Exit(MESH_UNREACHABLE) from exc


# --- the operator behind a change (issue 14) -----------------------------------------------------
# Every command that changes the mesh (keys, budgets, policies) records who did it, the same way:
# ``--actor NAME``, else ``$STELLWERK_ACTOR``, else the OS user. An identifier, as audited.

ACTOR_ENV: Final = "STELLWERK_ACTOR"
ACTOR_HELP: Final = "Who makes the change, as audited (default: $STELLWERK_ACTOR or the OS user)."
INVALID_ACTOR: Final = "--actor must be an identifier (letters, digits, _ . : @ / + = -, at most 128)"
_ACTOR: Final = re.compile(r"^[A-Za-z0-9_.:@/<>=+\-]{1,128}$")


def valid_actor(actor: str) -> bool:
    return bool(_ACTOR.match(actor))


def os_user() -> str:
    """The OS user as an identifier (characters an identifier may not hold become ``_``)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return re.sub(r"[^A-Za-z0-9_.:@/<>=+\-]", "_", name)[:128] or "unknown"


def operator_actor(given: str | None) -> str:
    """The operator a change is recorded under; ValueError (exit 2) if it is no identifier."""
    name = given or os.environ.get(ACTOR_ENV) or os_user()
    if not valid_actor(name):
        raise ValueError(INVALID_ACTOR)
    return name
