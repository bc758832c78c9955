"""Putting DLP-screened strings back where they came from."""

from __future__ import annotations

import json

from services.toolgateway.screening import mirrors, rendered, strings_in, with_strings


def test_strings_round_trip_in_order() -> None:
    value = {"a": "x", "b": [1, "y", {"c": "z", "d": None}], "e": True}
    assert strings_in(value) == ["x", "y", "z"]
    assert with_strings(value, iter(["X", "Y", "Z"])) == {"a": "X", "b": [1, "Y", {"c": "Z", "d": None}], "e": True}


def test_json_copy_of_the_structured_result_is_recognised() -> None:
    structured = {"id": 1, "title": "Drucker", "tags": ["a"]}
    assert mirrors(json.dumps(structured, indent=2), structured)
    assert mirrors(rendered(structured), structured)
    assert not mirrors("Drucker", structured)
    assert not mirrors(json.dumps({"id": 2}), structured)
    assert not mirrors("{not json", structured)
    assert not mirrors("{}", None)

