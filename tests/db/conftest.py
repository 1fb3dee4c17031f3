"""Fixtures for the results-database tests: the record builders of ``db_visit_factory.py``.

``engine`` and ``sessions`` (a database migrated to the newest schema) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

FACTORY_PATH = Path(__file__).with_name("db_visit_factory.py")


def load_factory() -> ModuleType:
    """Load ``db_visit_factory.py`` (tests use importlib mode, so it is not on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("crlib_tests_db_visit_factory", FACTORY_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def factory() -> ModuleType:
    """Record builders: ``visit_records``, ``record_visit``, ``table_counts``."""
    return load_factory()
