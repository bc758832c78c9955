"""The *shape* of a tool call's arguments: where each parameter sits and its JSON type.

This is what the audit records instead of the arguments. Keys appear by name only when the
tool's schema declares them — a declared name is the tool author's vocabulary, an undeclared
key may itself be data (a name, an e-mail) and is recorded as ``<additional>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from schemas.events import ParamShape
from schemas.vocabulary import JsonType

MAX_DEPTH: Final = 4
MAX_ENTRIES: Final = 64
ADDITIONAL: Final = "<additional>"
_SAFE_KEY: Final = re.compile(r"^[A-Za-z0-9_.:@=+\-]{1,48}$")


def json_type(value: Any) -> JsonType:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _alternatives(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The schema and the members of its anyOf/oneOf/allOf (how Optional[...] is spelled)."""
    found = [schema]
    for keyword in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(keyword) or ():
            if isinstance(member, Mapping):
                found.append(member)
    return found


def declared_properties(schema: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not schema:
        return {}
    out: dict[str, Mapping[str, Any]] = {}
    for alternative in _alternatives(schema):
        properties = alternative.get("properties")
        if isinstance(properties, Mapping):
            out.update({k: v for k, v in properties.items() if isinstance(v, Mapping)})
    return out


def _item_schema(schema: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not schema:
        return None
    for alternative in _alternatives(schema):
        items = alternative.get("items")
        if isinstance(items, Mapping):
            return items
    return None


def parameter_shape(arguments: Mapping[str, Any], schema: Mapping[str, Any] | None) -> list[ParamShape]:
    """Distinct (path, type) pairs in document order, at most ``MAX_ENTRIES``."""
    seen: dict[tuple[str, JsonType], None] = {}

    def add(path: str, value: Any) -> bool:
        seen.setdefault((path or "/", json_type(value)), None)
        return len(seen) < MAX_ENTRIES

    def walk(value: Any, schema: Mapping[str, Any] | None, path: str, depth: int) -> bool:
        if depth >= MAX_DEPTH:
            return True
        if isinstance(value, Mapping):
            declared = declared_properties(schema)
            for key, item in value.items():
                known = isinstance(key, str) and key in declared and _SAFE_KEY.match(key) is not None
                child = f"{path}/{key if known else ADDITIONAL}"
                if not add(child, item) or not walk(item, declared.get(key) if known else None, child, depth + 1):
                    return False
        elif isinstance(value, list | tuple):
            child = f"{path}/-"
            for item in value:
                if not add(child, item) or not walk(item, _item_schema(schema), child, depth + 1):
                    return False
        return True

    walk(arguments, schema, "", 0)
    return [ParamShape(path=path, type=kind) for path, kind in seen]
