"""Request attributes from the API key's defaults plus what the caller may declare.

A caller can raise its data sensitivity, never lower it below the key's floor, and cannot
grant itself a quality tier or budget class above what its key allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, get_args

from schemas.events import RequestAttributes
from schemas.vocabulary import (
    BudgetClass,
    DataSensitivity,
    QualityTier,
    UsecaseClass,
    max_sensitivity,
)
from services.runtime.settings import ApiKey

HEADER_PREFIX = "x-stellwerk-"
T = TypeVar("T", bound=str)
_FIELDS = ("data_sensitivity", "quality_tier", "budget_class", "usecase_class", "need_websearch", "need_tools")


class InvalidAttribute(ValueError):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def _declared(headers: Mapping[str, str], metadata: Mapping[str, object]) -> dict[str, str]:
    """Caller declarations: metadata wins over headers (it is part of the signed-off body)."""
    declared: dict[str, str] = {}
    for field in _FIELDS:
        header = headers.get(HEADER_PREFIX + field.replace("_", "-"))
        if header is not None:
            declared[field] = header.strip().lower()
        value = metadata.get(field)
        if value is not None:
            declared[field] = str(value).strip().lower()
    return declared


def _pick(field: str, value: str | None, allowed: tuple[T, ...], default: T) -> T:
    if value is None:
        return default
    for option in allowed:
        if option == value:
            return option
    raise InvalidAttribute(field)


def _flag(field: str, value: str | None) -> bool:
    if value is None:
        return False
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise InvalidAttribute(field)


def resolve_attributes(
    key: ApiKey, headers: Mapping[str, str], metadata: Mapping[str, object]
) -> tuple[UsecaseClass, RequestAttributes]:
    declared = _declared(headers, metadata)
    usecase = _pick("usecase_class", declared.get("usecase_class"), get_args(UsecaseClass), key.usecase_class)
    sensitivity = max_sensitivity(
        key.sensitivity_floor,
        _pick("data_sensitivity", declared.get("data_sensitivity"), get_args(DataSensitivity), key.sensitivity_floor),
    )
    quality_levels: tuple[QualityTier, ...] = get_args(QualityTier)
    quality = _pick("quality_tier", declared.get("quality_tier"), quality_levels, key.quality_tier)
    quality = min(quality, key.max_quality_tier, key=quality_levels.index)
    budget_levels: tuple[BudgetClass, ...] = get_args(BudgetClass)
    budget = _pick("budget_class", declared.get("budget_class"), budget_levels, key.budget_class)
    budget = min(budget, key.max_budget_class, key=budget_levels.index)
    return usecase, RequestAttributes(
        data_sensitivity=sensitivity,
        quality_tier=quality,
        budget_class=budget,
        need_websearch=_flag("need_websearch", declared.get("need_websearch")),
        need_tools=_flag("need_tools", declared.get("need_tools")),
    )
