from __future__ import annotations

import pytest

from services.gateway.attributes import InvalidAttribute, resolve_attributes, resolve_pseudonymize
from services.runtime.settings import ApiKey

KEY = ApiKey(key_id="k", key_sha256="0" * 64, tenant="t", business_unit="b", user_role="r",
             usecase_class="chat", budget_class="standard", max_budget_class="standard",
             quality_tier="standard", max_quality_tier="standard", sensitivity_floor="confidential")


def test_key_defaults_apply() -> None:
    usecase, attrs = resolve_attributes(KEY, {}, {})
    assert usecase == "chat"
    assert (attrs.data_sensitivity, attrs.quality_tier, attrs.budget_class) == ("confidential", "standard", "standard")


def test_caller_can_raise_but_not_lower_sensitivity() -> None:
    _, raised = resolve_attributes(KEY, {"x-stellwerk-data-sensitivity": "highly_confidential"}, {})
    assert raised.data_sensitivity == "highly_confidential"
    _, lowered = resolve_attributes(KEY, {}, {"data_sensitivity": "public"})
    assert lowered.data_sensitivity == "confidential"


def test_caller_cannot_grant_itself_more_than_the_key_allows() -> None:
    _, attrs = resolve_attributes(KEY, {"x-stellwerk-quality-tier": "high"}, {"budget_class": "premium"})
    assert attrs.quality_tier == "standard"
    assert attrs.budget_class == "standard"
    _, lower = resolve_attributes(KEY, {}, {"budget_class": "low"})
    assert lower.budget_class == "low"


def test_metadata_overrides_headers_and_flags_parse() -> None:
    usecase, attrs = resolve_attributes(
        KEY, {"x-stellwerk-usecase-class": "coding", "x-stellwerk-need-tools": "true"}, {"usecase_class": "extraction"}
    )
    assert usecase == "extraction" and attrs.need_tools and not attrs.need_websearch


@pytest.mark.parametrize(("field", "value"), [("data_sensitivity", "secret"), ("need_tools", "maybe")])
def test_invalid_values_are_rejected(field: str, value: str) -> None:
    with pytest.raises(InvalidAttribute) as info:
        resolve_attributes(KEY, {}, {field: value})
    assert info.value.field == field


@pytest.mark.parametrize(
    ("headers", "metadata", "expected"),
    [
        ({}, {}, False),
        ({}, {"pseudonymize": True}, True),
        ({}, {"pseudonymize": False}, False),
        ({}, {"pseudonymize": "true"}, True),
        ({}, {"pseudonymize": "false"}, False),  # bool("false") would have said True
        ({}, {"pseudonymize": None}, False),
        ({"x-stellwerk-pseudonymize": "true"}, {}, True),
        ({"x-stellwerk-pseudonymize": "false"}, {}, False),
        ({"x-stellwerk-pseudonymize": "true"}, {"pseudonymize": False}, False),  # metadata wins
    ],
)
def test_pseudonymize_accepts_booleans_and_exact_strings(
    headers: dict[str, str], metadata: dict[str, object], expected: bool
) -> None:
    assert resolve_pseudonymize(headers, metadata) is expected


def test_pseudonymize_falls_back_to_the_default() -> None:
    assert resolve_pseudonymize({}, {}, default=True) is True
    assert resolve_pseudonymize({"x-stellwerk-pseudonymize": "false"}, {}, default=True) is False


@pytest.mark.parametrize("value", ["False", "TRUE", "yes", "1", "0", "", " true", 1, 0, "null", [], {}])
def test_pseudonymize_refuses_anything_else(value: object) -> None:
    with pytest.raises(InvalidAttribute) as info:
        resolve_pseudonymize({}, {"pseudonymize": value})
    assert info.value.field == "pseudonymize"
    if isinstance(value, str):
        with pytest.raises(InvalidAttribute):
            resolve_pseudonymize({"x-stellwerk-pseudonymize": value}, {})
