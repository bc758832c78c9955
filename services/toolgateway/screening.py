"""Tool arguments and results through the DLP guard.

All strings of one call (argument values, or a result's text blocks and structured leaves)
are screened together, as the DLP service screens all messages of a request; the redacted
strings are put back where they came from. Keys are not screened: they are the tool's
vocabulary (validated against its schema).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from schemas.events import Envelope
from schemas.vocabulary import Direction
from services.dlp.guard import DlpGuard, PolicyContext, Screening


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


def policy_context(event: Envelope) -> PolicyContext:
    return PolicyContext(
        usecase_class=event.usecase_class,
        tenant=event.tenant,
        business_unit=event.business_unit,
        user_role=event.user_role,
    )


def screen(guard: DlpGuard, texts: list[str], direction: Direction, event: Envelope) -> Screening:
    """Raises ``DlpUnavailable`` when the guard cannot decide (callers refuse: fail closed)."""
    return guard.screen(texts, direction=direction, context=policy_context(event))
