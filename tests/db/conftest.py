"""Fixtures for the results-database tests: a database migrated to the newest schema."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def engine(database_url: str) -> Iterator[Any]:
    """Engine on a fresh database upgraded to the newest schema."""
    from crlib.db.engine import make_engine
    from crlib.db.migrate import upgrade

    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Any) -> Any:
    """A sessionmaker on :func:`engine`."""
    from crlib.db.engine import session_factory

    return session_factory(engine)


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
