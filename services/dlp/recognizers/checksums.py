"""Check-digit algorithms an organisation identifier may name in org_identifiers.yaml."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def luhn(value: str) -> bool:
    digits = _digits(value)
    if len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iso7064_mod97_10(value: str) -> bool:
    """ISO 7064 MOD 97-10 over the alphanumerics (letters A=10 … Z=35), as in IBAN."""
    chars = "".join(ch for ch in value.upper() if ch.isalnum())
    if len(chars) < 3:
        return False
    numeric = "".join(str(int(ch, 36)) for ch in chars)
    return int(numeric) % 97 == 1


def iso7064_mod11_10(value: str) -> bool:
    """ISO 7064 MOD 11,10 (the check of the German Steuer-ID)."""
    digits = _digits(value)
    if len(digits) < 2:
        return False
    product = 10
    for ch in digits[:-1]:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    check = (11 - product) % 10
    return check == int(digits[-1])


def mod11_weighted(value: str) -> bool:
    """Weights 2,3,4,… from the right over the payload; check = 11 - sum mod 11 (10, 11 → 0)."""
    digits = _digits(value)
    if len(digits) < 2:
        return False
    payload, check = digits[:-1], int(digits[-1])
    total = sum(int(ch) * (i + 2) for i, ch in enumerate(reversed(payload)))
    expected = (11 - total % 11) % 11 % 10
    return expected == check


CHECKSUMS: Final[dict[str, Callable[[str], bool]]] = {
    "luhn": luhn,
    "iso7064_mod97_10": iso7064_mod97_10,
    "iso7064_mod11_10": iso7064_mod11_10,
    "mod11": mod11_weighted,
}
