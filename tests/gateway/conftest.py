"""The shared hardened mesh (tests/conftest.py) as ``mesh`` for the gateway's tests."""

from __future__ import annotations

import pytest

from stellwerk.supervisor import Mesh


@pytest.fixture(scope="session")
def mesh(hardened_mesh: Mesh) -> Mesh:
    return hardened_mesh
