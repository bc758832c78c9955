"""Schema violations are reported by path and keyword; the audit sees shapes, never values."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.toolgateway.shape import parameter_shape
from services.toolgateway.validation import SchemaCache, SchemaUnusable, Violation

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 20},
        "priority": {"enum": ["low", "normal", "high"], "type": "string"},
        "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "comment": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
    },
    "required": ["title"],
}


@pytest.mark.parametrize(
    ("arguments", "violation"),
    [
        ({"title": "a" * 21}, Violation("/title", "/properties/title/maxLength", "maxLength")),
        ({}, Violation("", "/required", "required")),
        ({"title": "abc", "priority": "asap"}, Violation("/priority", "/properties/priority/enum", "enum")),
        ({"title": "abc", "tags": [{"name": 7}]}, Violation("/tags/0/name", "/properties/tags/items/properties/name/type", "type")),
        ({"title": "abc", "owner": "erika"}, Violation("", "/additionalProperties", "additionalProperties")),
    ],
)
def test_violation_names_where_and_which_keyword(arguments: dict[str, Any], violation: Violation) -> None:
    assert SchemaCache().check(SCHEMA, arguments) == violation


def test_valid_arguments_pass_and_validators_are_cached() -> None:
    cache = SchemaCache()
    assert cache.check(SCHEMA, {"title": "VPN down", "comment": None}) is None
    assert cache.check(dict(SCHEMA), {"title": "Printer"}) is None
    assert len(cache._validators) == 1


def test_lenient_mode_allows_undeclared_keys() -> None:
    assert SchemaCache(strict=False).check(SCHEMA, {"title": "abc", "owner": "x"}) is None


def test_a_broken_tool_schema_is_unusable() -> None:
    with pytest.raises(SchemaUnusable):
        SchemaCache().check({"type": "no-such-type"}, {})


def test_shape_has_paths_and_types_but_no_values() -> None:
    secret = "Erika Mustermann, erika@example.org"
    arguments = {
        "title": secret,
        "priority": "high",
        "tags": [{"name": secret}, {"name": "x", secret: 1}],
        secret: True,  # an undeclared key may itself be data
        "comment": None,
    }
    shape = parameter_shape(arguments, SCHEMA)
    assert [(s.path, s.type) for s in shape] == [
        ("/title", "string"),
        ("/priority", "string"),
        ("/tags", "array"),
        ("/tags/-", "object"),
        ("/tags/-/name", "string"),
        ("/tags/-/<additional>", "integer"),
        ("/<additional>", "boolean"),
        ("/comment", "null"),
    ]
    encoded = msgspec.json.encode(shape).decode()
    assert "Erika" not in encoded and "example.org" not in encoded and "high" not in encoded


def test_shape_without_a_schema_names_no_key() -> None:
    shape = parameter_shape({"query": "x", "n": 2, "ratio": 0.5}, None)
    assert [(s.path, s.type) for s in shape] == [("/<additional>", "string"), ("/<additional>", "integer"),
                                                 ("/<additional>", "number")]
