"""Effective request attributes for routing (issue 4, "Request attributes").

Three parties state a data sensitivity: the API key (its floor), the caller (its
declaration) and the DLP guard (the level its policy derived from the content). The
strictest wins, so a caller can raise sensitivity but never lower it. Quality tier and
budget class are capped at what the key allows: a caller may ask for less, never more.
"""

from __future__ import annotations

from typing import Final, get_args

import msgspec

from schemas.events import RequestAttributes
from schemas.vocabulary import BudgetClass, ContextLengthBucket, DataSensitivity, QualityTier, max_sensitivity

QUALITY_ORDER: Final[tuple[QualityTier, ...]] = get_args(QualityTier)
BUDGET_ORDER: Final[tuple[BudgetClass, ...]] = get_args(BudgetClass)


class KeyAllowances(msgspec.Struct, frozen=True, kw_only=True):
    """What an API key permits. The defaults restrict nothing (for callers that do not know
    the key, e.g. a router re-deriving sensitivity after the gateway has already capped)."""

    sensitivity_floor: DataSensitivity = "public"
    max_quality_tier: QualityTier = "high"
    max_budget_class: BudgetClass = "premium"


UNRESTRICTED: Final = KeyAllowances()


def effective_attributes(
    declared: RequestAttributes,
    *,
    allowances: KeyAllowances = UNRESTRICTED,
    dlp_sensitivity: DataSensitivity | None = None,
    context_length_bucket: ContextLengthBucket | None = None,
) -> RequestAttributes:
    """The attributes routing decides on; ``declared`` is left untouched.

    ``context_length_bucket`` is the measured bucket: it replaces whatever the caller
    declared, since only the router's own count is trustworthy.
    """
    levels = [allowances.sensitivity_floor, declared.data_sensitivity]
    if dlp_sensitivity is not None:
        levels.append(dlp_sensitivity)
    return msgspec.structs.replace(
        declared,
        data_sensitivity=max_sensitivity(*levels),
        quality_tier=min(declared.quality_tier, allowances.max_quality_tier, key=QUALITY_ORDER.index),
        budget_class=min(declared.budget_class, allowances.max_budget_class, key=BUDGET_ORDER.index),
        context_length_bucket=context_length_bucket or declared.context_length_bucket,
    )
