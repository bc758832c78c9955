"""One DlpGuard per test session: building the engines is the slow part.

Tests assert on types, counts and offsets only. Where a test must check that a value does
not appear somewhere, it computes a boolean first, so a failing assertion cannot print the
value (pytest shows the operands of a failed comparison).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.vocabulary import Direction
from services.dlp.guard import DlpGuard, PolicyContext, Screening
from services.dlp.settings import PACKAGE_DIR, DlpSettings

CONTEXT = PolicyContext(usecase_class="chat", tenant="t1", business_unit="bu", user_role="user")


@pytest.fixture(scope="session")
def guard() -> DlpGuard:
    return DlpGuard.from_settings(DlpSettings())


@pytest.fixture
def screen(guard: DlpGuard) -> Callable[..., Screening]:
    def run(*texts: str, direction: Direction = "input", pseudonymize: bool = False) -> Screening:
        return guard.screen(list(texts), direction=direction, context=CONTEXT, pseudonymize=pseudonymize)

    return run


@pytest.fixture
def data_copy(tmp_path: Path) -> DlpSettings:
    """Settings pointing at a private copy of the shipped policy and data (for edits)."""
    shutil.copytree(PACKAGE_DIR / "policies", tmp_path / "policies")
    shutil.copytree(PACKAGE_DIR / "data", tmp_path / "data")
    data = tmp_path / "data"
    return DlpSettings(
        policy_dir=tmp_path / "policies",
        org_identifiers_file=data / "org_identifiers.yaml",
        config_file=data / "guard.yaml",
        medical_dir=data / "medical",
        names_dir=data / "names",
    )


def spans(screening: Screening, entity: str) -> list[tuple[int, int]]:
    return [(f.start, f.end) for f in screening.findings if f.type == entity]


def types(screening: Screening) -> set[str]:
    return {f.type for f in screening.findings}


def span_of(text: str, part: str) -> tuple[int, int]:
    start = text.index(part)
    return start, start + len(part)
