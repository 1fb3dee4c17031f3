"""Fixtures for registry tests: a real MLflow store (sqlite in tmp) and a small patch dataset."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh MLflow tracking + registry store (SQLite) for one test."""
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _mlflow_dir(tmp_path: Path) -> None:
    (tmp_path / "mlflow").mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def test_dataset(small_archive, tmp_path_factory: pytest.TempPathFactory):
    """Patches of one exposure per simulated visit, every visit in the test split."""
    from crlib.training.patches import PatchParameters, build_patch_dataset
    from crlib.training.sources import exposures_from_local_archive
    from crlib.training.splits import SplitFractions

    exposures = exposures_from_local_archive(small_archive.root)
    one_per_visit = {e.visit: e for e in reversed(exposures)}
    return build_patch_dataset(
        sorted(one_per_visit.values(), key=lambda e: e.rootname),
        tmp_path_factory.mktemp("datasets"),
        params=PatchParameters(patch=256, border=128),
        fractions=SplitFractions(train=0.0, validation=0.0, test=1.0),
    )


@pytest.fixture
def results_engine(database_url: str):
    """Engine on a fresh results database upgraded to the newest schema."""
    from crlib.db.engine import make_engine
    from crlib.db.migrate import upgrade

    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def results_sessions(results_engine):
    """A sessionmaker on :func:`results_engine`."""
    from crlib.db.engine import session_factory

    return session_factory(results_engine)
