"""``crlib_retrain`` and ``crlib_promote_model`` end to end with ``dag.test()``.

Real Airflow (in-process ``dag.test``), real PostgreSQL, a real MLflow store (SQLite) and real
training on two small simulated visits whose truth is recorded in the results database.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from testsupport.sql import query_rows

pytestmark = pytest.mark.slow

HELPERS = Path(__file__).resolve().parents[1] / "pipeline" / "lifecycle_helpers.py"


def _helpers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crlib_tests_lifecycle_helpers_dags", HELPERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def retrain_archive(tmp_path_factory: pytest.TempPathFactory):
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("retrain-archive")
    return simulate_archive(root, visits=2, exposures=2, field_type="extragalactic", size="small", seed=43)


def _states(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_retrain_skips_without_new_truth_then_trains_and_the_gate_records_its_decision(
    airflow_db, dagbag, retrain_archive, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from crlib.config import load_settings
    from crlib.registry.versions import get_version, list_versions

    torch.set_num_threads(2)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key, value in {
        "CRLIB_DATABASE_URL": database_url,
        "CRLIB_MLFLOW_TRACKING_URI": tracking_uri,
        "CRLIB_DEVICE": "cpu",
        "CRLIB_THREADS": "2",
        "CRLIB_TRAIN_EPOCHS": "1",
        "CRLIB_TRAIN_BATCH_SIZE": "2",
        "CRLIB_TRAIN_MAX_PATCHES_PER_EPOCH": "4",
        "CRLIB_TRAIN_VALIDATION_FRACTION": "0",
        "CRLIB_TRAIN_TEST_FRACTION": "0.5",
        "CRLIB_RETRAIN_MIN_NEW_EXPOSURES": "4",
    }.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    rootnames = [e.rootname for v in retrain_archive.visits for e in v.exposures]
    _helpers().record_archive(settings, retrain_archive, truth={r: "ok" for r in rootnames[:3]})

    retrain = dagbag.dags["crlib_retrain"]
    skipped = retrain.test()
    assert skipped.state == "success"
    assert _states(skipped) == {"enough_new_truth": "success", "train": "skipped"}
    assert list_versions(tracking_uri, "deepcr-acs-wfc") == []

    _helpers().record_archive(settings, retrain_archive, truth={rootnames[3]: "ok"})
    trained = retrain.test()
    assert trained.state == "success"
    assert _states(trained) == {"enough_new_truth": "success", "train": "success"}
    challenger = get_version(tracking_uri, "deepcr-acs-wfc", "challenger")
    assert challenger.version == "2" and challenger.tags["crlib.source"] == "training"
    assert query_rows(database_url, "SELECT alias, version FROM current_model_aliases") == [
        ("challenger", "2")
    ]

    promote = dagbag.dags["crlib_promote_model"]
    run = promote.test(run_conf={"version": "challenger", "dry_run": True})
    assert run.state == "success"
    assert query_rows(
        database_url,
        "SELECT v.version, d.dry_run, d.applied, d.run_id, (SELECT count(*) FROM "
        "jsonb_array_elements(d.comparisons) c WHERE c->>'kind' IS NULL) "
        "FROM promotion_decisions d JOIN model_versions v ON v.id = d.challenger_version_id",
    ) == [("2", True, False, run.run_id, 4)]
    assert get_version(tracking_uri, "deepcr-acs-wfc", "champion").version == "1"
