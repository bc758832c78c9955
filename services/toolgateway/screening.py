"""Tool arguments and results through the DLP service, on the bus.

All strings of one call (argument values, or a result's text blocks and structured leaves)
are screened together, as the DLP service screens all messages of a request; the redacted
strings are put back where they came from. Keys are not screened: they are the tool's
vocabulary (validated against its schema).

The screening itself is the DLP workers' (``stellwerk.v1.dlp.screen``, request-reply,
``services/dlp/screen_service.py``): one guard, one org-identifier list and one sensitivity
policy for chat and tools, reloaded in one place. No answer in time, no worker, or a typed
error in the reply raise ``DlpUnavailable``; the gateway refuses the call (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.aio.client import Client

from schemas import subjects
from schemas.events import DlpDecision, Envelope, ScreenReply, ScreenRequest, encode, envelope_fields
from schemas.vocabulary import Direction, ErrorCode
from services.runtime.telemetry import inject_headers


def strings_in(value: Any) -> list[str]:
    """Every string value, depth first, in a stable order."""
    out: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for child in item.values():
                walk(child)
        elif isinstance(item, list | tuple):
            for child in item:
                walk(child)

    walk(value)
    return out


def with_strings(value: Any, replacements: Iterator[str]) -> Any:
    """``value`` with its strings replaced, in the order ``strings_in`` listed them."""
    if isinstance(value, str):
        return next(replacements)
    if isinstance(value, dict):
        return {key: with_strings(child, replacements) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [with_strings(child, replacements) for child in value]
    return value


def mirrors(text: str, structured: dict[str, Any] | None) -> bool:
    """True if a text block is only the JSON rendering of the structured result, as MCP
    servers send it for clients without structured output. Screening it again would double
    the DLP work; it is rebuilt from the screened structured result instead."""
    if structured is None or not text.startswith("{"):
        return False
    try:
        return bool(json.loads(text) == structured)
    except ValueError:
        return False


def rendered(structured: dict[str, Any]) -> str:
    return json.dumps(structured, indent=2, ensure_ascii=False)


class DlpUnavailable(RuntimeError):
    """The DLP service gave no decision; ``code`` is the error the call fails with."""

    def __init__(self, code: ErrorCode = "dlp_unavailable") -> None:
        super().__init__(code)
        self.code: ErrorCode = code


@dataclass(frozen=True, slots=True)
class Screened:
    decision: DlpDecision
    # The originals for allow, redacted for redact, None for block; never in repr().
    texts: list[str] | None = field(repr=False)


class Screener(Protocol):
    async def screen(self, texts: list[str], direction: Direction, event: Envelope) -> Screened: ...


_reply_decoder = msgspec.json.Decoder(ScreenReply)


class BusScreener:
    """Screens through the DLP workers (``stellwerk.v1.dlp.screen``), waiting at most
    ``timeout_s`` and never past the call's deadline."""

    def __init__(self, nc: Client, timeout_s: float = 5.0) -> None:
        self.nc = nc
        self.timeout_s = timeout_s

    async def screen(self, texts: list[str], direction: Direction, event: Envelope) -> Screened:
        wait_s = min(self.timeout_s, event.remaining_s())
        if wait_s <= 0:
            raise DlpUnavailable("deadline_exceeded")
        request = ScreenRequest(**envelope_fields(event), direction=direction, texts=texts)
        try:
            msg = await self.nc.request(subjects.DLP_SCREEN, encode(request), timeout=wait_s,
                                        headers=inject_headers({}))
            reply = _reply_decoder.decode(msg.data)
        except (nats.errors.Error, TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            # No responders, no answer in time, a payload above the server's limit, a garbled
            # reply: no decision, so no pass.
            raise DlpUnavailable() from exc
        if reply.error is not None or reply.decision is None:
            raise DlpUnavailable("deadline_exceeded" if reply.error == "deadline_exceeded" else "dlp_unavailable")
        if reply.decision.action != "block" and (reply.texts is None or len(reply.texts) != len(texts)):
            raise DlpUnavailable()  # a reply that does not fit the request is no decision
        return Screened(reply.decision, reply.texts if reply.decision.action != "block" else None)
