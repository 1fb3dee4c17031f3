"""End to end: a champion's own training exposures are left out of its statistics unless asked for.

A model is trained on a small simulated archive (real training, torch on CPU, a real MLflow store),
promoted through the gate, and the archive it was trained on is reprocessed with it through the
pipeline's inference and scoring stages into a real PostgreSQL. ``crlib stats performance`` then
pools only the visit the champion never trained on, and with ``--include-training`` every visit;
both answers are checked against the per-exposure scores recorded in the database.

Training runs as ``crlib train --archive`` does, without writing to the results database: the
training splits reach the database when the gate records its decision (read from the version's
MLflow manifest), which is what lets the reprocessed scores carry ``split = train``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(2)


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from crlib.cli.app import app, register_commands

    register_commands()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _performance(*extra: str) -> tuple[dict[str, dict], str]:
    """``crlib stats performance --by model --format json``: ``{model: row}`` and the note."""
    result = _cli("stats", "performance", "--by", "model", "--format", "json", *extra)
    rows = json.loads(result.stdout)
    return {row["model"]: row for row in rows}, result.stderr


def _expected(metrics: list, rootnames: set[str]) -> dict[str, float | int]:
    """What pooling the recorded scores of ``rootnames`` must give (counts and the one TPR definition)."""
    from crlib.metrics.roc import tpr_at_fpr_from_histograms

    chosen = [m for m in metrics if m.rootname in rootnames]
    assert {m.rootname for m in chosen} == rootnames
    hist_cr = np.sum([m.hist_cr for m in chosen], axis=0)
    hist_noncr = np.sum([m.hist_noncr for m in chosen], axis=0)
    expected: dict[str, float | int] = {
        "n_exposures": len(chosen),
        "tp": sum(m.tp for m in chosen),
        "fp": sum(m.fp for m in chosen),
        "fn": sum(m.fn for m in chosen),
        "tn": sum(m.tn for m in chosen),
    }
    for fpr in (0.0005, 0.005):
        expected[f"tpr_at_fpr_{fpr:g}"] = round(tpr_at_fpr_from_histograms(hist_cr, hist_noncr, fpr), 5)
    return expected


def _reprocess(settings, archive, run_id: str, model: str) -> None:  # type: ignore[no-untyped-def]
    """The reprocessing DAG's per-exposure stages: predict with the champion, score against truth."""
    from crlib.pipeline.ledger import RunLedger
    from crlib.pipeline.stages import infer_exposure, score_exposure

    ledger = RunLedger(settings.data_root, run_id)
    for visit in archive.visits:
        ledger.update_visit(
            visit.visit,
            files={e.rootname: str(e.path) for e in visit.exposures},
            truth={e.rootname: str(e.truth_path) for e in visit.exposures},
        )
    for rootname in sorted(e.rootname for v in archive.visits for e in v.exposures):
        infer_exposure(settings, run_id=run_id, rootname=rootname, redo=True)
        score_exposure(settings, run_id=run_id, rootname=rootname, redo=True)
        state = ledger.exposure(rootname)
        assert state.scored and state.scored_model == model, state


def test_stats_leave_out_a_champion_s_own_training_exposures_unless_asked(
    lifecycle_settings, lifecycle_archive, helpers
) -> None:
    from crlib.db.metric_store import load_metrics
    from crlib.db.session import open_results_db
    from crlib.db.training_splits import split_of, training_splits
    from crlib.pipeline.lifecycle import promote_model
    from crlib.registry.promotion import GateThresholds
    from crlib.registry.versions import CHAMPION, get_version

    settings = lifecycle_settings
    archive = lifecycle_archive
    uri = settings.resolved_mlflow_uri()
    exposures = {e.rootname for v in archive.visits for e in v.exposures}
    helpers.record_archive(settings, archive, truth=dict.fromkeys(exposures, "ok"))

    # 0. The archive as processed by the bootstrapped champion, deepCR's shipped weights (v1).
    _cli("models", "--bootstrap")
    _reprocess(settings, archive, "nightly-1", "deepcr-acs-wfc:1")

    # 1. Train (fine-tuning v1) on the simulated archive, as `crlib train --archive` does.
    trained = json.loads(_cli("train", "--archive", str(archive.root), "--json").stdout)
    assert (trained["version"], trained["initial"]) == ("2", "deepcr-acs-wfc/1")
    dataset_dir = settings.data_root / "training" / "datasets" / trained["dataset_id"]
    split_by_visit = {
        v: e["split"] for v, e in json.loads((dataset_dir / "manifest.json").read_text())["visits"].items()
    }
    assert sorted(split_by_visit.values()) == ["test", "train"], split_by_visit
    (train_visit,) = [v for v, s in split_by_visit.items() if s == "train"]
    (test_visit,) = [v for v, s in split_by_visit.items() if s == "test"]
    engine, sessions = open_results_db(settings)
    try:
        with sessions() as session:  # --archive training wrote nothing to the results database
            assert [s for s in training_splits(session) if s.version == "2"] == []
    finally:
        engine.dispose()

    # 2. Promote it through the gate. Its one test field cannot decide anything statistically, and it
    # was trained on simulator data: the thresholds are opened for this test, the leak check is not.
    decision = promote_model(
        settings,
        run_id="manual__promote",
        thresholds=GateThresholds(
            max_drop_points=100.0,
            min_mean_gain_points=-100.0,
            min_ci_low_points=-100.0,
            min_test_fields=1,
            allow_simulated=True,
        ),
    )
    assert decision["outcome"] == "promoted", decision["reasons"]
    assert get_version(uri, "deepcr-acs-wfc", CHAMPION).version == "2"

    # 3. Reprocess the whole archive: the new champion predicts and every exposure is scored again.
    _reprocess(settings, archive, "reprocess-1", "deepcr-acs-wfc:2")
    engine, sessions = open_results_db(settings)
    try:
        with sessions() as session:
            recorded = {(s.version, s.training_dataset): s.visits for s in training_splits(session)}
            assert recorded == {
                ("1", "external"): {"train": 0, "validation": 0, "test": 0},
                ("2", trained["dataset_id"]): {"train": 1, "validation": 0, "test": 1},
            }
            assert split_of(session, train_visit, model_name="deepcr-acs-wfc", version="2") == "train"
            metrics = load_metrics(session, model_name="deepcr-acs-wfc", model_version="2")
            shipped = load_metrics(session, model_name="deepcr-acs-wfc", model_version="1")
    finally:
        engine.dispose()
    assert {m.rootname: m.split for m in metrics} == {r: split_by_visit[r[:6]] for r in exposures}
    assert {m.split for m in shipped} == {"unseen"} and len(shipped) == 4
    assert all(m.truth_status == "ok" and m.border_px == 128 and m.dq_excluded for m in metrics + shipped)

    # 4. By default only the visit the champion never trained on is pooled for it (v1 saw none) ...
    unseen = {r for r in exposures if r[:6] == test_visit}
    default, note = _performance()
    row = default["deepcr-acs-wfc:2"]
    assert row["splits"] == "test" and row["truth"] == "ok"
    assert {k: row[k] for k in _expected(metrics, unseen)} == _expected(metrics, unseen)
    assert {k: default["deepcr-acs-wfc:1"][k] for k in _expected(shipped, exposures)} == _expected(
        shipped, exposures
    )
    assert "pooled: split test+unseen of each model version; truth status ok" in note
    assert "--include-training adds the visits each version was trained or validated on" in note
    assert f"deepcr-acs-wfc:2: training manifest of dataset {trained['dataset_id']} (1 train" in note
    assert "deepcr-acs-wfc:1: weights crlib did not train" in note

    # ... and with --include-training its training visit too: the numbers move exactly by its scores,
    # while v1's, which trained on none of these visits, stay as they were.
    everything, note = _performance("--include-training")
    row = everything["deepcr-acs-wfc:2"]
    assert row["splits"] == "train+test"
    assert {k: row[k] for k in _expected(metrics, exposures)} == _expected(metrics, exposures)
    assert "pooled: split train+validation+test+unseen" in note
    trained_on = _expected(metrics, exposures - unseen)
    for key in ("n_exposures", "tp", "fp", "fn", "tn"):
        assert everything["deepcr-acs-wfc:2"][key] == default["deepcr-acs-wfc:2"][key] + trained_on[key]
    assert trained_on["tp"] + trained_on["fn"] > 0  # the training visit has CR pixels: the pools differ
    assert everything["deepcr-acs-wfc:1"] == default["deepcr-acs-wfc:1"]
