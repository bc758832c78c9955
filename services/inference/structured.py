"""Structured output (issue 13): is the model's answer the JSON document the client asked for?

``response_format`` ``json_object`` asks for any JSON object, ``json_schema`` for a document
valid under the given schema. Models (and providers' "strict" modes) get this wrong often
enough that the gateway checks before the caller sees a success: an invalid answer is asked
again once with the reason, then refused (``output_schema_violation``) — never returned.

The reason given to the model names the failing location and keyword, not the value.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any, Final

import jsonschema_rs

REASK: Final = (
    "Your previous answer was not valid for the required response format ({reason}). "
    "Answer again with only the JSON document, no other text."
)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    return jsonschema_rs.validator_for(json.loads(schema_json))


def schema_of(response_format: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a ``json_schema`` response format requires (None for ``json_object``)."""
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema")
    return schema if isinstance(schema, dict) else {}


def violation(content: str, response_format: dict[str, Any] | None) -> str | None:
    """Why ``content`` does not satisfy ``response_format`` (a short code-like reason), or None."""
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return None
    try:
        document = json.loads(content)
    except ValueError:
        return "not JSON"
    schema = schema_of(response_format)
    if schema is None:
        return None if isinstance(document, dict) else "not a JSON object"
    key = json.dumps(schema, sort_keys=True)
    try:
        validator = _validator(key)
    except Exception:  # noqa: BLE001 - an invalid schema is the client's; the gateway checked it is JSON
        return "schema invalid"
    for error in validator.iter_errors(document):
        where = "/" + "/".join(str(p) for p in error.instance_path)
        return f"at {where}: {error.kind.__class__.__name__}"
    return None


def schema_hash(response_format: dict[str, Any]) -> str:
    """Content hash of the requested format, for the audit trail (the schema, never the answer)."""
    return hashlib.sha256(json.dumps(response_format, sort_keys=True).encode()).hexdigest()[:32]
