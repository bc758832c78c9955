"""What the tool gateway tells a tool server about a call, in the MCP request's ``_meta``.

Tool servers apply per-use-case rules (the search server's domain lists and retention) from
these keys; they are ids and enums only, never the user's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

PREFIX: Final = "stellwerk.io/"


@dataclass(frozen=True, slots=True)
class CallContext:
    usecase_class: str = "default"
    tenant: str | None = None
    request_id: str | None = None
    call_id: str | None = None

    def to_meta(self) -> dict[str, Any]:
        return {f"{PREFIX}{key}": value for key in self.__slots__ if (value := getattr(self, key)) is not None}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> CallContext:
        """The context of a call; unknown or missing keys fall back to the defaults."""
        values = {key: meta.get(f"{PREFIX}{key}") for key in cls.__slots__} if meta else {}
        return cls(**{key: str(value) for key, value in values.items() if isinstance(value, str)})
