"""Fixtures for the simulator tests.

``gc_visit`` and ``ex_visit`` come from ``basic_archive`` (tests/conftest.py): the session's small
archive layout simulated *without* archive effects (``SimEffects.basic()``), so the basic physics
(noise against the header, pointing errors as pure translations, Moffat stars) is checked on its
own; the archive effects, on by default, are checked in ``test_effects.py``, and ``small_archive``
is simulated with them.
"""

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
def gc_visit(basic_archive):
    """The basic archive's globular-cluster visit (3 exposures)."""
    return next(v for v in basic_archive.visits if v.field_type == "globular_cluster")


@pytest.fixture(scope="session")
def ex_visit(basic_archive):
    """The basic archive's extragalactic visit (3 exposures)."""
    return next(v for v in basic_archive.visits if v.field_type == "extragalactic")
