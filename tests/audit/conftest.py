"""Audit tests: the whole-mesh fixtures of the integration suite, plus trail builders."""

from __future__ import annotations

from tests.integration.conftest import mesh  # noqa: F401
