"""Session-wide test fixtures: a real PostgreSQL, isolated settings, small simulated visits.

PostgreSQL: ``CRLIB_TEST_DATABASE_URL`` when set, else an embedded server (pgserver) started once
for the session in a temporary directory. Each test that asks for ``database_url`` gets a fresh,
empty database on that server, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from testsupport import flc

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the files that hold ``slow`` tests first, each file's tests in their own order.

    `make test` hands whole files to its xdist workers in collection order; alphabetical order put
    the longest files (tests/truth/) last, so one worker ran them alone while the other idled.
    Longest first ends the run on short files. The order changes nothing else: tests do not
    depend on each other.
    """
    heavy = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in heavy)  # stable: file and test order kept


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real HST headers, reference files, recorded MAST/Gaia responses)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests expect ../shared beside the checkout")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_crlib_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's CRLIB_* environment or writes into the checkout's .crlib."""
    for key in list(os.environ):
        if key.startswith("CRLIB_") and key != "CRLIB_TEST_DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CRLIB_DATA_ROOT", str(tmp_path_factory.mktemp("crlib-data")))


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real PostgreSQL server's maintenance database (``postgres``)."""
    from crlib.database_url import sqlalchemy_url

    configured = os.environ.get("CRLIB_TEST_DATABASE_URL")
    if configured:
        yield sqlalchemy_url(configured)
        return
    from crlib.db.embedded import ensure_runtime_dir

    ensure_runtime_dir()  # before pgserver's import: it reads XDG_RUNTIME_DIR (unset for root, services)
    import pgserver

    pgdata = tmp_path_factory.mktemp("pg")
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield sqlalchemy_url(server.get_uri("postgres"))
    finally:
        server.cleanup()


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh empty database on the session's server, dropped after the test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"crlib_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory: pytest.TempPathFactory):
    """A small simulated local archive: 2 visits x 3 exposures (globular cluster, extragalactic).

    Simulated with the simulator's defaults: every archive effect on (``SimEffects.realistic()``).
    """
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("archive")
    return simulate_archive(
        root, visits=2, exposures=3, field_type="mixed", filters=("F606W",), size="small", seed=11
    )


@pytest.fixture(scope="session")
def basic_archive(tmp_path_factory: pytest.TempPathFactory):
    """``small_archive``'s layout (2 visits x 3 small exposures, seed 11) with no archive effect.

    For tests of the basic simulator's physics, and of scoring against the simulator's own CR
    mask (``CRCHARGE >= 5 e-``, which with CTE on also holds the faint trail pixels of every CR).
    """
    from crlib.simulate import simulate_archive
    from crlib.simulate.effects import SimEffects

    return simulate_archive(
        tmp_path_factory.mktemp("basic-archive"),
        visits=2,
        exposures=3,
        field_type="mixed",
        filters=("F606W",),
        size="small",
        seed=11,
        effects=SimEffects.basic(),
    )


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


@pytest.fixture
def flc_factory(tmp_path: Path) -> Callable[..., tuple[Path, dict[int, np.ndarray]]]:
    """Build a small two-chip FLC; returns its path and the truth masks per SCI extver."""

    def build(
        name: str = "jtest01aq", *, shape: tuple[int, int] = (200, 260), seed: int = 3, **kwargs
    ) -> tuple[Path, dict[int, np.ndarray]]:
        chips, truths = {}, {}
        from crlib.profiles import ACS_WFC

        for offset, layout in enumerate(ACS_WFC.chips):
            chips[layout.sci_extver], truths[layout.sci_extver] = flc.synthetic_chip(
                shape, seed=seed + offset
            )
        path = flc.write_flc(tmp_path / f"{name}_flc.fits", chips, rootname=name, **kwargs)
        return path, truths

    return build
