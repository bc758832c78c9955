"""Canonical bytes of a struct for hashing: sorted keys, default-valued fields left out.

Leaving defaults out is what keeps a ten-year-old hash valid after the schema grows: a record
written before a field was appended decodes with that field's default, which is omitted here
exactly as it was (absent) when the record was hashed. The rule this relies on: fields are
only ever appended, with a constant default (a value, an empty container, a struct of
defaults), and a default never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(order="sorted")
# Factories whose result is a fixed value; any other factory (a fresh id, the current time)
# produces values that are never "the default".
_CONSTANT_FACTORIES: tuple[Callable[[], Any], ...] = (list, dict, tuple, set, frozenset)

_NO_DEFAULT: Any = object()  # a sentinel no value equals
_CONTAINERS = (msgspec.Struct, list, tuple, dict)


@cache
def _fields(struct_type: type[msgspec.Struct]) -> tuple[tuple[str, str, Any], ...]:
    """(attribute, JSON key, default value or the sentinel) per field, in declaration order."""
    out = []
    for field in msgspec.structs.fields(struct_type):
        if field.default is not msgspec.NODEFAULT:
            default = field.default
        elif field.default_factory in _CONSTANT_FACTORIES or (
            isinstance(field.default_factory, type) and issubclass(field.default_factory, msgspec.Struct)
        ):
            default = field.default_factory()  # a struct of defaults compares equal to another
        else:
            default = _NO_DEFAULT
        out.append((field.name, field.encode_name, default))
    return tuple(out)


def plain(value: Any) -> Any:
    """Builtins for ``value`` with every default-valued struct field dropped, recursively."""
    if isinstance(value, msgspec.Struct):
        out = {}
        for name, key, default in _fields(type(value)):
            item = getattr(value, name)
            # Same type and equal: False is not 0, 0.0 is not None.
            if type(item) is type(default) and item == default:
                continue
            out[key] = plain(item) if isinstance(item, _CONTAINERS) else item
        return out
    if isinstance(value, list | tuple):
        return [plain(item) if isinstance(item, _CONTAINERS) else item for item in value]
    if isinstance(value, dict):
        return {key: plain(item) if isinstance(item, _CONTAINERS) else item for key, item in value.items()}
    return value


def canonical(value: msgspec.Struct, *, drop: str | None = None) -> bytes:
    """Canonical JSON of a struct; ``drop`` leaves out one top-level field (the hash itself)."""
    builtins = plain(value)
    if drop is not None:
        builtins.pop(drop, None)
    return _encoder.encode(builtins)
