"""The model lifecycle as the DAGs and the CLI run it: new truth -> challenger -> gate -> inference.

Real PostgreSQL, a real MLflow store (SQLite), real training and inference on small simulated visits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from testsupport.sql import query_rows


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(2)


def test_retrain_waits_for_enough_new_truth_then_registers_a_challenger(
    lifecycle_settings, lifecycle_archive, helpers, database_url: str
) -> None:
    from crlib.pipeline.lifecycle import count_new_truth, enough_new_truth, promote_model, train_challenger
    from crlib.registry.tracking import mlflow_client
    from crlib.registry.versions import get_version, list_versions

    settings = lifecycle_settings
    rootnames = [e.rootname for v in lifecycle_archive.visits for e in v.exposures]
    helpers.record_archive(
        settings, lifecycle_archive, truth={r: "ok" for r in rootnames[:3]} | {rootnames[3]: "suspect"}
    )
    counted = count_new_truth(settings)
    assert (counted.eligible, counted.new, counted.threshold, counted.basis) == (3, 3, 4, "no training run")
    assert not enough_new_truth(settings)  # 3 < CRLIB_RETRAIN_MIN_NEW_EXPOSURES = 4

    helpers.record_archive(settings, lifecycle_archive, truth={rootnames[3]: "ok"})
    assert enough_new_truth(settings)

    summary = train_challenger(settings, run_id="manual__retrain")
    json.dumps(summary, allow_nan=False)  # XCom-safe
    assert (summary["model_name"], summary["version"], summary["label"]) == (
        "deepcr-acs-wfc",
        "2",
        "deepcr-acs-wfc/2",
    )
    assert summary["initial"] == "deepcr-acs-wfc/1"  # fine-tuned from the bootstrapped champion
    assert summary["exposures"] == 4 and summary["visits"] == 2
    assert summary["patches_per_split"] == {"train": 12, "validation": 0, "test": 12}
    assert summary["patches_per_second"] > 0 and len(summary["epochs"]) == 1
    numbers = summary["tpr"]["extragalactic/F606W"]
    assert set(numbers) == {"trained", "initial"}
    assert all(0.0 <= v <= 100.0 for v in numbers["trained"].values())
    run = mlflow_client(settings.resolved_mlflow_uri()).get_run(summary["run_id"])
    assert run.data.tags["crlib.pipeline_run_id"] == "manual__retrain"
    assert get_version(settings.resolved_mlflow_uri(), "deepcr-acs-wfc", "challenger").version == "2"
    assert query_rows(
        database_url,
        "SELECT v.version, v.source, v.mlflow_run_id FROM model_versions v "
        "JOIN models m ON m.id = v.model_id WHERE m.name = 'deepcr-acs-wfc'",
    ) == [("2", "mlflow", summary["run_id"])]
    assert query_rows(database_url, "SELECT alias, version FROM current_model_aliases") == [
        ("challenger", "2")
    ]

    # Airflow retrying the same task (same run id) returns the version it registered; no version 3.
    retried = train_challenger(settings, run_id="manual__retrain")
    assert (retried["version"], retried["run_id"], retried["reused"]) == ("2", summary["run_id"], True)
    assert [v.version for v in list_versions(settings.resolved_mlflow_uri(), "deepcr-acs-wfc")] == ["2", "1"]

    # Everything eligible was used by that run: nothing new until more truth is recorded.
    after = count_new_truth(settings)
    assert (after.eligible, after.new, after.basis) == (4, 0, "dataset manifest")
    assert after.last_run_id == summary["run_id"]
    assert not enough_new_truth(settings)

    # A dry run of the gate decides, records the decision, and moves nothing.
    dry = promote_model(settings, version="challenger", dry_run=True, run_id="manual__dry")
    json.dumps(dry, allow_nan=False)
    assert dry["dry_run"] and not dry["applied"] and dry["champion"] == "1"
    assert dry["outcome"] in ("would promote (dry run)", "refused (dry run)")
    assert len(dry["comparisons"]) == 4 and dry["dataset"] == summary["dataset"]
    assert query_rows(
        database_url,
        "SELECT dry_run, applied, run_id, (SELECT count(*) FROM jsonb_array_elements(comparisons) c "
        "WHERE c->>'kind' IS NULL) FROM promotion_decisions",
    ) == [(True, False, "manual__dry", 4)]


def test_promotion_gate_moves_inference_to_a_better_model_and_refuses_a_worse_one(
    lifecycle_settings, lifecycle_archive, lifecycle_test_dataset, helpers, database_url: str
) -> None:
    from crlib.db.model_registry import decision_history
    from crlib.db.session import open_results_db
    from crlib.model.weights import load_shipped_model
    from crlib.pipeline.ledger import RunLedger
    from crlib.pipeline.lifecycle import promote_model
    from crlib.pipeline.stages import infer_exposure
    from crlib.registry.versions import CHALLENGER, CHAMPION, set_alias

    settings = lifecycle_settings
    uri = settings.resolved_mlflow_uri()
    tags = {"crlib.dataset_dir": str(lifecycle_test_dataset.directory)}
    # v1: a degraded champion; v2: deepCR's real weights as the challenger (clearly better)
    assert helpers.register_weights(uri, helpers.degraded_deepcr_state(), alias=CHAMPION, tags=tags) == "1"
    shipped = load_shipped_model("ACS-WFC").network.state_dict()
    assert helpers.register_weights(uri, shipped, alias=CHALLENGER, tags=tags) == "2"

    helpers.record_archive(settings, lifecycle_archive)
    exposure = lifecycle_archive.visits[0].exposures[0]
    ledger = RunLedger(settings.data_root, "nightly-1")
    ledger.update_visit(exposure.rootname[:6], files={exposure.rootname: str(exposure.path)})

    def predictions() -> list[tuple]:
        return query_rows(
            database_url,
            "SELECT m.name, v.version, v.source FROM predictions p JOIN model_versions v "
            "ON v.id = p.model_version_id JOIN models m ON m.id = v.model_id ORDER BY p.recorded_at",
        )

    infer_exposure(settings, run_id="nightly-1", rootname=exposure.rootname, redo=False)
    assert predictions() == [("deepcr-acs-wfc", "1", "mlflow")]
    assert ledger.exposure(exposure.rootname).model == "deepcr-acs-wfc:1"

    dry = promote_model(settings, dry_run=True, run_id="manual__dry")
    assert dry["promoted"] and not dry["applied"] and dry["champion"] == "1"
    decision = promote_model(settings, run_id="manual__promote")
    assert decision["outcome"] == "promoted" and decision["champion"] == "2"
    assert decision["mean_delta_points"] > 0.5 and not decision["failed"]

    # The next inference run picks the new champion up (the file of v1 is not reused for v2) ...
    infer_exposure(settings, run_id="nightly-1", rootname=exposure.rootname, redo=False)
    assert predictions() == [("deepcr-acs-wfc", "1", "mlflow"), ("deepcr-acs-wfc", "2", "mlflow")]
    state = ledger.exposure(exposure.rootname)
    assert state.model == "deepcr-acs-wfc:2" and state.reused_prediction is False
    from astropy.io import fits

    prediction_file = Path(str(state.prediction))
    assert fits.getheader(prediction_file)["CRMODVER"] == "2"
    # ... and a re-run without redo reuses that file and adds no row.
    written = prediction_file.stat().st_mtime_ns
    infer_exposure(settings, run_id="nightly-1", rootname=exposure.rootname, redo=False)
    assert ledger.exposure(exposure.rootname).reused_prediction is True
    assert prediction_file.stat().st_mtime_ns == written and len(predictions()) == 2

    # The degraded v1 challenging the real weights is refused with the numbers that failed.
    set_alias(uri, "deepcr-acs-wfc", CHALLENGER, "1", reason="test: challenge again")
    refused = promote_model(settings, run_id="manual__refuse")
    assert refused["outcome"] == "refused" and refused["champion"] == "2"
    assert refused["failed"] and all(c["delta_points"] < -0.5 for c in refused["failed"])
    assert any("vs champion" in reason for reason in refused["reasons"])

    engine, sessions = open_results_db(settings)
    try:
        with sessions() as session:
            history = decision_history(session, "deepcr-acs-wfc")
    finally:
        engine.dispose()
    assert [(d.outcome, d.challenger_version, d.champion_version, d.run_id) for d in history] == [
        ("refused", "1", "2", "manual__refuse"),
        ("promoted", "2", "1", "manual__promote"),
        ("would promote (dry run)", "2", "1", "manual__dry"),
    ]
    failed = [c for c in history[0].comparisons if c.get("kind") is None and c["failed"]]
    assert failed == refused["failed"]
    assert query_rows(database_url, "SELECT alias, version FROM current_model_aliases") == [("champion", "2")]
