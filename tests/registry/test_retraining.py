"""A short retraining run on simulated visits: MLflow run, artifacts, registered challenger, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crlib.registry.retraining import TrainingRequest, run_training
from crlib.registry.versions import CHALLENGER, CHAMPION, list_versions
from crlib.training.patches import PatchParameters
from crlib.training.sources import exposures_from_local_archive
from crlib.training.splits import SplitFractions
from crlib.training.trainer import TrainingConfig


@pytest.fixture(scope="module")
def two_visit_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two extragalactic visits (one lands in train, one in test)."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("train-archive")
    simulate_archive(root, visits=2, exposures=2, field_type="extragalactic", size="small", seed=21)
    return root


def test_training_run_is_logged_and_registered_as_challenger(two_visit_archive: Path, tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    request = TrainingRequest(
        initial="champion",
        config=TrainingConfig(epochs=2, batch_size=2, lr=0.0005, max_patches_per_epoch=4, seed=2),
        patches=PatchParameters(patch=256, border=128),
        fractions=SplitFractions(0.5, 0.0, 0.5),
    )
    result = run_training(
        exposures_from_local_archive(two_visit_archive),
        tracking_uri=uri,
        work_dir=tmp_path / "work",
        request=request,
    )

    assert (
        result.version is not None
        and result.version.version == "2"
        and result.version.aliases == (CHALLENGER,)
    )
    assert [v.aliases for v in list_versions(uri, "deepcr-acs-wfc")] == [(CHALLENGER,), (CHAMPION,)]
    assert result.initial_label == "deepcr-acs-wfc/1"
    assert result.dataset.manifest["patches_per_split"] == {"train": 12, "validation": 0, "test": 12}
    # the split follows the fields' hashes: (proposal, target) of the two simulated visits
    assert sorted(v["field"] for v in result.dataset.manifest["visits"].values()) == [
        "9405:HUDFPAR2",
        "9450:GOODSN",
    ]
    # what the gate checks: the logged manifest, and simulator data (deepCR's real-data weights
    # fine-tuned on a simulated archive: mixed)
    tags = result.version.tags
    assert tags["crlib.training_manifest"] == f"runs:/{result.run_id}/dataset/manifest.json"
    assert (tags["crlib.truth_source"], tags["crlib.simulated_exposures"]) == ("mixed", "4/4")
    assert all(e["simulated"] for e in result.dataset.manifest["exposures"])
    assert [g.key for g in result.test_report.groups] == ["extragalactic/F606W"]

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.data.params["initial"] == "champion" and run.data.params["patch_border"] == "128"
    assert [m.step for m in client.get_metric_history(result.run_id, "train_loss")] == [1, 2]
    assert "test/extragalactic/F606W/tpr_at_0.005_dilated" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    artifacts |= {a.path for a in client.list_artifacts(result.run_id, "dataset")}
    assert {
        "evaluation/tpr_table.json",
        "evaluation/roc_extragalactic_F606W.png",
        "dataset/manifest.json",
    } <= artifacts


@pytest.mark.slow
def test_cli_train_models_and_promote(
    two_visit_archive: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from crlib.cli.app import app, register_commands

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    register_commands()
    runner = CliRunner()
    trained = runner.invoke(
        app,
        [
            "train",
            "--archive",
            str(two_visit_archive),
            "--from",
            "deepcr",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--validation-fraction",
            "0",
            "--test-fraction",
            "0.5",
            "--json",
        ],
    )
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["label"] == "deepcr-acs-wfc/1" and summary["version"] == "1"
    assert summary["patches_per_second"] > 0 and summary["initial"].startswith("deepCR ACS-WFC")

    listed = runner.invoke(app, ["models", "--bootstrap", "--history", "--json"])
    assert listed.exit_code == 0, listed.output
    models = json.loads(listed.stdout)
    assert {tuple(v["aliases"]) for v in models["versions"]} == {(CHALLENGER,), (CHAMPION,)}

    dry = runner.invoke(app, ["promote", "--dry-run", "--json", "--device", "cpu"])
    decision = json.loads(dry.stdout)
    assert decision["challenger_version"] == "1" and decision["champion_version"] == "2"
    assert decision["applied"] is False and len(decision["comparisons"]) == 4
    # trained on a simulated archive, scored on one test field: refused, saying both
    assert decision["outcome"] == "refused (dry run)"
    assert any("--allow-simulated" in reason for reason in decision["reasons"])
    assert any(reason.startswith("only 1 test field(s)") for reason in decision["reasons"])
    assert decision["run_id"].startswith("cli__")

    # the dry run is in the decision history `crlib models` shows
    listed = runner.invoke(app, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    (recorded,) = json.loads(listed.stdout)["decisions"]
    assert recorded["dry_run"] is True and recorded["challenger_version"] == "1"
    assert recorded["outcome"] == decision["outcome"]
    shown = runner.invoke(app, ["models"])
    assert "v1 vs champion v2: " + decision["outcome"] in shown.output
