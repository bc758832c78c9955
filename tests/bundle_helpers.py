"""What the policy-bundle tests of DLP, router and tool gateway share: the CLI in a thread
(it runs its own event loop) and worker processes started by a test, stopped at its end."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

from typer.testing import CliRunner, Result

from stellwerk.cli import app


async def acli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "250"})


def started_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """For a fixture: the test appends the processes it starts; all are stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=15)
