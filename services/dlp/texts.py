"""Every text of a conversation or an answer that DLP must screen, and the way back.

A message is more than its ``content`` (issue 13): an assistant turn carries tool calls whose
``arguments`` are JSON the model wrote, a tool turn carries a tool's result. Arguments are
screened as the strings inside the JSON (keys and values, decoded), not as JSON text:
``"M\\u00fcller"`` is the name Müller, and a recognizer reading the escaped form would miss it.
Redacted strings are put back and the document re-encoded, so the arguments stay valid JSON.
Arguments that are not JSON are screened as one text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from schemas.events import ChatMessage, FunctionCall, GeneratedChoice, ToolCall

Rebuild = Callable[[list[str]], str]


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.append(key)
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def _replace(value: Any, texts: Iterator[str]) -> Any:
    """``value`` with its strings taken, in the order ``_strings`` found them, from ``texts``."""
    if isinstance(value, str):
        return next(texts)
    if isinstance(value, dict):
        rebuilt: dict[str, Any] = {}
        for item in value.values():
            new_key = next(texts)
            rebuilt[new_key] = _replace(item, texts)
        return rebuilt
    if isinstance(value, list):
        return [_replace(item, texts) for item in value]
    return value


def split_arguments(arguments: str) -> tuple[list[str], Rebuild]:
    """The strings of a tool call's JSON arguments, and how to rebuild them from screened ones."""
    try:
        document = json.loads(arguments)
    except ValueError:
        return [arguments], lambda texts: texts[0]
    strings: list[str] = []
    _strings(document, strings)

    def rebuild(texts: list[str]) -> str:
        return json.dumps(_replace(document, iter(texts)), ensure_ascii=False)

    return strings, rebuild


class TextSlots:
    """Flattens texts from several places into one list for ``guard.screen`` and puts the
    screened texts back. Each ``add_*`` returns a getter for the screened value."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._screened: list[str] = []

    def add(self, text: str) -> Callable[[], str]:
        index = len(self.texts)
        self.texts.append(text)
        return lambda: self._screened[index]

    def add_arguments(self, arguments: str) -> Callable[[], str]:
        strings, rebuild = split_arguments(arguments)
        start = len(self.texts)
        self.texts.extend(strings)
        return lambda: rebuild(self._screened[start : start + len(strings)])

    def add_tool_calls(self, calls: Sequence[ToolCall] | None) -> Callable[[], list[ToolCall] | None]:
        if not calls:
            return lambda: None
        getters = [(call, self.add_arguments(call.function.arguments)) for call in calls]
        return lambda: [
            ToolCall(id=call.id, function=FunctionCall(name=call.function.name, arguments=get()))
            for call, get in getters
        ]

    def fill(self, screened: Sequence[str]) -> None:
        if len(screened) != len(self.texts):
            raise ValueError("screened texts do not match")
        self._screened = list(screened)


def message_slots(messages: Sequence[ChatMessage]) -> tuple[TextSlots, Callable[[], list[ChatMessage]]]:
    """A conversation's texts and how to rebuild the conversation from their screened form."""
    slots = TextSlots()
    getters = [(m, slots.add(m.content), slots.add_tool_calls(m.tool_calls)) for m in messages]

    def rebuild() -> list[ChatMessage]:
        return [
            ChatMessage(role=m.role, content=content(), name=m.name, tool_calls=calls(), tool_call_id=m.tool_call_id)
            for m, content, calls in getters
        ]

    return slots, rebuild


def choice_slots(choices: Sequence[GeneratedChoice]) -> tuple[TextSlots, Callable[[], list[GeneratedChoice]]]:
    """An answer's texts (every choice's content and tool-call arguments), and the way back."""
    slots = TextSlots()
    getters = [(c, slots.add(c.content), slots.add_tool_calls(c.tool_calls)) for c in choices]

    def rebuild() -> list[GeneratedChoice]:
        return [
            GeneratedChoice(index=c.index, content=content(), finish_reason=c.finish_reason, tool_calls=calls())
            for c, content, calls in getters
        ]

    return slots, rebuild
