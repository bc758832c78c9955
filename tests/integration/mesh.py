"""Helpers to run a whole mesh for integration tests (real processes, real NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml
from nats.js import JetStreamContext

from schemas import subjects
from schemas.events import AuditEvent, AuditTrail, decode
from services.runtime.settings import DEFAULT_CONFIG
from stellwerk.supervisor import Mesh, free_port
from tests.conftest import start_nats

T = TypeVar("T")


@contextmanager
def running_mesh(root: Path, config_file: Path, **options: Any) -> Iterator[Mesh]:
    """A whole mesh on its own nats-server under ``root``; everything stops on exit, also when
    start-up or a test fails."""
    nats_process, url = start_nats(root / "nats")
    mesh = Mesh(config_file=config_file, state_dir=root / "state", nats_url=url, **options)
    try:
        asyncio.run(mesh.start())
        yield mesh
    finally:
        mesh.stop()
        nats_process.terminate()
        nats_process.wait(timeout=5)


def write_test_config(directory: Path, **overrides: object) -> Path:
    """The default config with free ports, so tests never collide with a running mesh."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["gateway_port"] = free_port()
    config["console_port"] = free_port()
    ports: dict[int, int] = {}  # configured port -> free port (one simulator may serve several routes)
    for simulator in config["simulators"]:
        ports[simulator["port"]] = simulator["port"] = free_port()
        simulator["ttft_ms"] = 0
        simulator["itl_ms"] = 0
    for deployment in config["deployments"]:
        configured = int(deployment["api_base"].rsplit(":", 1)[1].split("/", 1)[0])
        deployment["api_base"] = f"http://127.0.0.1:{ports[configured]}/v1"
    config.update(overrides)
    path = directory / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 15.0) -> T:
    """Poll ``probe`` until it returns a truthy value (asynchronous effects settle)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def stored(js: JetStreamContext, subject: str, idle_s: float = 0.3) -> list[bytes]:
    """Every message a stream holds on ``subject`` (wildcards allowed), oldest first: an
    ordered consumer read until it has been idle for ``idle_s``."""
    found: list[bytes] = []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        while True:
            try:
                found.append((await sub.next_msg(timeout=idle_s)).data)
            except TimeoutError:
                return found
    finally:
        await sub.unsubscribe()


async def audit_events(js: JetStreamContext) -> list[AuditEvent]:
    """Every audit event the AUDIT stream holds, whether written on its own
    (``audit.<stage>``) or as part of a request's trail (``audit.trail.<stage>``)."""
    events: list[AuditEvent] = []
    # Shared meshes also hold what the bus fuzzer published on audit subjects: the audit
    # service dead-letters those; here they are skipped.
    for data in await stored(js, subjects.AUDIT_EVENTS):
        with contextlib.suppress(ValueError, msgspec.MsgspecError):  # incl. invalid UTF-8
            events.append(decode(data, AuditEvent))
    for data in await stored(js, subjects.AUDIT_TRAILS):
        with contextlib.suppress(ValueError, msgspec.MsgspecError):  # incl. invalid UTF-8
            events.extend(decode(data, AuditTrail).events)
    return events


async def drain(stream: Any, finish: list[str], text: list[str]) -> None:
    """Read an ``openai`` chat stream to its end, collecting finish reasons and text pieces as
    they arrive — into the caller's lists, so what came before an error event is kept."""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            finish.append(chunk.choices[0].finish_reason)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
