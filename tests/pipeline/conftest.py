"""Fixtures for the model-lifecycle tests: simulated visits, a real Postgres and MLflow store.

``lifecycle_archive``: two extragalactic visits of two small exposures (600 s). With the test
settings (validation 0, test 0.5) the first visit lands in the held-out test split and the second
in training, so a training run has both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def lifecycle_archive(tmp_path_factory: pytest.TempPathFactory):
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("lifecycle-archive")
    return simulate_archive(root, visits=2, exposures=2, field_type="extragalactic", size="small", seed=41)


@pytest.fixture
def lifecycle_settings(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path):
    """Settings (through the environment, as tasks see them) for a short, CPU-only lifecycle."""
    from crlib.config import load_settings
    from crlib.registry.serving import clear_model_cache

    (tmp_path / "mlflow").mkdir()
    values = {
        "CRLIB_DATABASE_URL": database_url,
        "CRLIB_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
        "CRLIB_DEVICE": "cpu",
        "CRLIB_THREADS": "2",
        "CRLIB_TRAIN_EPOCHS": "1",
        "CRLIB_TRAIN_BATCH_SIZE": "2",
        "CRLIB_TRAIN_MAX_PATCHES_PER_EPOCH": "4",
        "CRLIB_TRAIN_VALIDATION_FRACTION": "0",
        "CRLIB_TRAIN_TEST_FRACTION": "0.5",
        "CRLIB_RETRAIN_MIN_NEW_EXPOSURES": "4",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    clear_model_cache()
    yield load_settings()
    clear_model_cache()


@pytest.fixture(scope="session")
def lifecycle_test_dataset(lifecycle_archive, tmp_path_factory: pytest.TempPathFactory):
    """Every exposure of the archive cut into patches, all in the held-out test split."""
    from crlib.training.patches import PatchParameters, build_patch_dataset
    from crlib.training.sources import exposures_from_local_archive
    from crlib.training.splits import SplitFractions

    return build_patch_dataset(
        exposures_from_local_archive(lifecycle_archive.root),
        tmp_path_factory.mktemp("lifecycle-datasets"),
        params=PatchParameters(patch=256, border=128),
        fractions=SplitFractions(train=0.0, validation=0.0, test=1.0),
    )


HELPERS_PATH = Path(__file__).with_name("lifecycle_helpers.py")


def load_helpers() -> ModuleType:
    """Load ``lifecycle_helpers.py`` (tests use importlib mode, so it is not on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("crlib_tests_lifecycle_helpers", HELPERS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def helpers() -> ModuleType:
    """``record_archive``, ``register_weights``, ``degraded_deepcr_state``."""
    return load_helpers()
