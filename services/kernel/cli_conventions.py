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

Pure constants: imported by ``stellwerk.cli`` and by each service's ``cli.py`` alike.
"""

from __future__ import annotations

import getpass
import os
import re
from enum import StrEnum
from typing import Final


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


OK: Final = 0
FAILED: Final = 1
INVALID_INPUT: Final = 2
MESH_UNREACHABLE: Final = 3


def unreachable(url: str) -> str:
    """The one message for an unreachable mesh (the URL, never credentials in it)."""
    return f"cannot reach the mesh at {_without_credentials(url)}"


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    hosts = [host.rpartition("@")[2] for host in rest.split(",")]
    return scheme + sep + ",".join(hosts)


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
