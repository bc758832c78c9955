"""Effective attributes: sensitivity only ever rises; the key caps quality and budget."""

from __future__ import annotations

import pytest

from schemas.events import RequestAttributes
from services.router.attributes import UNRESTRICTED, KeyAllowances, effective_attributes

CLINIC_KEY = KeyAllowances(sensitivity_floor="confidential", max_quality_tier="standard",
                           max_budget_class="standard")


@pytest.mark.parametrize(
    ("floor", "declared", "dlp", "effective"),
    [
        ("internal", "public", None, "internal"),  # the declaration cannot go below the floor
        ("internal", "confidential", None, "confidential"),  # the caller can raise it
        ("public", "public", "highly_confidential", "highly_confidential"),  # DLP raises it
        ("confidential", "internal", "public", "confidential"),  # DLP cannot lower it either
        ("highly_confidential", "public", "internal", "highly_confidential"),
    ],
)
def test_sensitivity_is_the_highest_of_floor_declaration_and_dlp(
    floor: str, declared: str, dlp: str | None, effective: str
) -> None:
    attributes = effective_attributes(
        RequestAttributes(data_sensitivity=declared),  # type: ignore[arg-type]
        allowances=KeyAllowances(sensitivity_floor=floor),  # type: ignore[arg-type]
        dlp_sensitivity=dlp,  # type: ignore[arg-type]
    )
    assert attributes.data_sensitivity == effective


def test_caller_cannot_grant_itself_more_than_the_key_allows() -> None:
    declared = RequestAttributes(quality_tier="high", budget_class="premium")
    attributes = effective_attributes(declared, allowances=CLINIC_KEY)
    assert (attributes.quality_tier, attributes.budget_class) == ("standard", "standard")


def test_caller_may_ask_for_less() -> None:
    attributes = effective_attributes(RequestAttributes(budget_class="low"), allowances=CLINIC_KEY)
    assert attributes.budget_class == "low"


def test_unrestricted_allowances_keep_the_declaration() -> None:
    declared = RequestAttributes(data_sensitivity="public", quality_tier="high", budget_class="premium",
                                 need_tools=True)
    assert effective_attributes(declared, allowances=UNRESTRICTED) == declared


def test_measured_bucket_replaces_the_declared_one_and_input_is_untouched() -> None:
    declared = RequestAttributes(context_length_bucket="<8k", data_sensitivity="public")
    attributes = effective_attributes(declared, dlp_sensitivity="confidential", context_length_bucket=">32k")
    assert (attributes.context_length_bucket, attributes.data_sensitivity) == (">32k", "confidential")
    assert (declared.context_length_bucket, declared.data_sensitivity) == ("<8k", "public")
