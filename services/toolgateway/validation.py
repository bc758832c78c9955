"""Arguments against the tool's JSON Schema (jsonschema-rs; compiled validators cached by
the schema's content hash, so a re-listed, unchanged tool reuses its validator).

A violation is reported by *where* (JSON Pointer into the arguments and into the schema) and
*which keyword* failed — never with the validator's message, which quotes the value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonschema_rs

CACHE_SIZE: Final = 512


class SchemaUnusable(ValueError):
    """The tool's own schema does not compile; its calls are refused (fail closed)."""


@dataclass(frozen=True, slots=True)
class Violation:
    instance_path: str  # JSON Pointer into the arguments ("" = the arguments object)
    schema_path: str  # JSON Pointer into the schema, ending in the keyword
    keyword: str  # type, required, maxLength, additionalProperties, ...


def pointer(parts: list[str | int]) -> str:
    """RFC 6901 JSON Pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _strict(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with undeclared top-level keys refused, unless it says otherwise."""
    strict = dict(schema)
    if "additionalProperties" not in strict and "properties" in strict:
        strict["additionalProperties"] = False
    return strict


class SchemaCache:
    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self._validators: dict[str, Any] = {}

    def _validator(self, schema: Mapping[str, Any]) -> Any:
        effective = _strict(schema) if self.strict else dict(schema)
        key = hashlib.sha256(json.dumps(effective, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        validator = self._validators.get(key)
        if validator is None:
            try:
                validator = jsonschema_rs.validator_for(effective)
            except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
                raise SchemaUnusable(type(exc).__name__) from None
            if len(self._validators) >= CACHE_SIZE:
                self._validators.pop(next(iter(self._validators)))
            self._validators[key] = validator
        return validator

    def check(self, schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> Violation | None:
        """The first violation (in instance-path order, so the answer is stable), or None."""
        validator = self._validator(schema)
        errors = list(validator.iter_errors(dict(arguments)))
        if not errors:
            return None
        first = min(errors, key=lambda e: (pointer(list(e.instance_path)), pointer(list(e.schema_path))))
        schema_parts = list(first.schema_path)
        keyword = next((str(p) for p in reversed(schema_parts) if isinstance(p, str)), "schema")
        return Violation(pointer(list(first.instance_path)), pointer(schema_parts), keyword)
