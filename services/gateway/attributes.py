"""Request attributes from the API key's defaults plus what the caller may declare.

A caller can raise its data sensitivity, never lower it below the key's floor, and cannot
grant itself a quality tier or budget class above what its key allows.

Whether a request is pseudonymised (reversibly, instead of redacted) is declared with the
header ``X-Stellwerk-Pseudonymize`` or ``metadata.pseudonymize`` and parsed strictly by
:func:`resolve_pseudonymize`: a JSON boolean, or exactly ``"true"`` / ``"false"`` for clients
whose metadata is string-to-string (OpenAI's). Anything else is refused, never guessed —
``bool("false")`` is ``True``.
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
PSEUDONYMIZE = "pseudonymize"
PSEUDONYMIZE_HEADER = HEADER_PREFIX + PSEUDONYMIZE
_BOOLEAN_STRINGS = {"true": True, "false": False}
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


def parse_boolean(field: str, value: object) -> bool:
    """A declared switch: a real boolean or exactly ``"true"`` / ``"false"``; else refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _BOOLEAN_STRINGS:
        return _BOOLEAN_STRINGS[value]
    raise InvalidAttribute(field)


def resolve_pseudonymize(
    headers: Mapping[str, str], metadata: Mapping[str, object], default: bool = False
) -> bool:
    """Pseudonymise this request? ``metadata`` wins over the header, both over ``default``.

    ``default`` is the key's (or platform's) setting. A ``null`` in metadata counts as not
    declared, as for the other attributes. Raises :class:`InvalidAttribute` naming
    ``pseudonymize`` for any other value, so the caller gets a 400 instead of a silent guess.
    """
    declared: object = headers.get(PSEUDONYMIZE_HEADER)
    if metadata.get(PSEUDONYMIZE) is not None:
        declared = metadata[PSEUDONYMIZE]
    return default if declared is None else parse_boolean(PSEUDONYMIZE, declared)
