"""Fixtures for the simulator tests, built on the session's ``small_archive`` (tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def read_visit_json() -> Callable[[Path], dict[str, Any]]:
    """Reader of a visit directory's ``truth/visit.json``."""

    def read(visit_directory: Path) -> dict[str, Any]:
        return json.loads((visit_directory / "truth" / "visit.json").read_text())

    return read


@pytest.fixture(scope="session")
def gc_visit(small_archive):
    """The small archive's globular-cluster visit (3 exposures)."""
    return next(v for v in small_archive.visits if v.field_type == "globular_cluster")


@pytest.fixture(scope="session")
def ex_visit(small_archive):
    """The small archive's extragalactic visit (3 exposures)."""
    return next(v for v in small_archive.visits if v.field_type == "extragalactic")
