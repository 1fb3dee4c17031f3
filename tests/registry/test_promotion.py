"""The promotion gate: worse challengers are refused with the failing numbers, better ones promoted."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import mlflow
from crlib.model.package import ModelMetadata, write_package
from crlib.registry.promotion import GateThresholds, compare_reports, promote
from crlib.registry.tracking import REGISTRY_EXPERIMENT, active_tracking, experiment_id, mlflow_client
from crlib.registry.versions import (
    CHALLENGER,
    CHAMPION,
    alias_history,
    bootstrap_registry,
    get_version,
    load_registered_model,
    log_model_package,
    register_version,
)
from crlib.training.evaluation import EvaluationReport, GroupScore


def _report(values: dict[str, tuple[float, float, float, float]]) -> EvaluationReport:
    empty = np.zeros(3, np.int64)
    groups = tuple(
        GroupScore(
            field_type=key.split("/")[0],
            filter=key.split("/")[1],
            tpr={"0.0005": a, "0.005": b},
            tpr_dilated={"0.0005": c, "0.005": d},
            n_cr=100,
            n_noncr=10000,
            patches=1,
            hist_cr=empty,
            hist_noncr=empty,
            hist_cr_dilated=empty,
            hist_noncr_dilated=empty,
        )
        for key, (a, b, c, d) in values.items()
    )
    return EvaluationReport(model_label="x", split="test", dataset_id="d", groups=groups)


def test_gate_refuses_a_drop_beyond_half_a_point_even_if_better_on_average() -> None:
    champion = _report(
        {"globular_cluster/F606W": (0.80, 0.95, 0.90, 0.97), "extragalactic/F606W": (0.85, 0.99, 0.95, 0.99)}
    )
    challenger = _report(
        {"globular_cluster/F606W": (0.90, 0.97, 0.95, 0.98), "extragalactic/F606W": (0.844, 0.99, 0.95, 0.99)}
    )
    passed, comparisons, mean, reasons = compare_reports(champion, challenger, GateThresholds())
    assert not passed and mean > 0
    assert len(comparisons) == 8 and [c.group for c in comparisons if c.failed] == ["extragalactic/F606W"]
    assert "extragalactic/F606W TPR@FPR=0.05%: 84.40% vs champion 85.00%" in reasons[0]
    # a looser threshold lets it through
    assert compare_reports(champion, challenger, GateThresholds(max_drop_points=1.0))[0]


def test_gate_requires_a_gain_on_average() -> None:
    same = _report({"resolved_galaxy/F814W": (0.6, 0.8, 0.7, 0.9)})
    passed, _, mean, reasons = compare_reports(same, same, GateThresholds())
    assert not passed and mean == 0 and "not above" in reasons[0]


def _register_degraded_champion(tracking_uri: str) -> None:
    """Version 1 = deepCR's weights with noise on the first convolution (a worse ranking), champion."""
    from crlib.model.weights import load_shipped_model

    state = {k: v.clone() for k, v in load_shipped_model("ACS-WFC").network.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    weight = state["inc.conv.conv.0.weight"]
    state["inc.conv.conv.0.weight"] = weight + 2.0 * weight.std() * torch.randn(
        weight.shape, generator=generator
    )
    metadata = ModelMetadata("unet2-batchnorm", source="degraded deepCR for tests")
    client = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, active_tracking(tracking_uri):
        written = write_package(Path(tmp) / "pkg", state, metadata)
        with mlflow.start_run(experiment_id=experiment_id(client, REGISTRY_EXPERIMENT)) as run:
            uri = log_model_package(Path(tmp) / "pkg", written)
    register_version(
        tracking_uri, model_uri=uri, model_name="deepcr-acs-wfc", run_id=run.info.run_id, alias=CHAMPION
    )


def test_worse_challenger_refused_then_better_promoted_and_used(
    tracking_uri: str, test_dataset, database_url: str
) -> None:
    from crlib.db.engine import make_engine

    engine = make_engine(database_url)
    try:
        _scenario(engine, tracking_uri, test_dataset)
    finally:
        engine.dispose()


def _scenario(engine, tracking_uri: str, test_dataset) -> None:  # type: ignore[no-untyped-def]
    from crlib.db.engine import session_factory
    from crlib.db.migrate import upgrade
    from crlib.db.model_registry import current_aliases
    from crlib.registry.decisions import database_recorder

    upgrade(engine)
    recorder = database_recorder(session_factory(engine), tracking_uri=tracking_uri)

    _register_degraded_champion(tracking_uri)  # v1 champion (bad)
    bootstrap_registry(tracking_uri)  # champion exists: no-op
    # v2: deepCR's real weights as challenger -> better than the degraded champion
    from crlib.model.weights import load_shipped_model

    with tempfile.TemporaryDirectory() as tmp, active_tracking(tracking_uri):
        written = write_package(
            Path(tmp) / "p",
            load_shipped_model("ACS-WFC").network.state_dict(),
            ModelMetadata("unet2-batchnorm"),
        )
        with mlflow.start_run(
            experiment_id=experiment_id(mlflow_client(tracking_uri), REGISTRY_EXPERIMENT)
        ) as run:
            uri = log_model_package(Path(tmp) / "p", written)
    register_version(
        tracking_uri, model_uri=uri, model_name="deepcr-acs-wfc", run_id=run.info.run_id, alias=CHALLENGER
    )

    dry = promote(
        tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, dry_run=True, recorder=recorder
    )
    assert dry.promoted and not dry.applied, dry.reasons
    assert get_version(tracking_uri, "deepcr-acs-wfc", CHAMPION).version == "1"

    decision = promote(tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, recorder=recorder)
    assert decision.applied and decision.mean_delta_points > 0.5
    _, champion = load_registered_model("models:/deepcr-acs-wfc@champion", tracking_uri=tracking_uri)
    assert champion.version == "2"  # the next inference run loads the promoted weights
    assert get_version(tracking_uri, "deepcr-acs-wfc", "2").tags["crlib.gate.outcome"] == "promoted"
    assert [(e.alias, e.version) for e in alias_history(tracking_uri, "deepcr-acs-wfc", alias=CHAMPION)] == [
        (CHAMPION, "1"),
        (CHAMPION, "2"),
    ]
    with session_factory(engine)() as session:
        assert current_aliases(session, "deepcr-acs-wfc") == {CHAMPION: "2"}

    # now the degraded v1 challenges the real weights: refused with the numbers that failed
    from crlib.registry.versions import set_alias

    set_alias(tracking_uri, "deepcr-acs-wfc", CHALLENGER, "1", reason="test")
    refused = promote(tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, recorder=recorder)
    assert not refused.applied and refused.failed()
    assert any("vs champion" in r for r in refused.reasons)
    assert get_version(tracking_uri, "deepcr-acs-wfc", CHAMPION).version == "2"
    assert get_version(tracking_uri, "deepcr-acs-wfc", "1").tags["crlib.gate.outcome"] == "refused"


def test_the_champion_cannot_challenge_itself(tracking_uri: str, test_dataset) -> None:
    bootstrap_registry(tracking_uri)
    decision = promote(tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, challenger="1")
    assert not decision.promoted and "already the champion" in decision.reasons[0]


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(2)


# ----------------------------------------------------------------------------- a gate that cannot be fooled
# Scores are constructed, not computed: `_score` is replaced, so these tests register tiny networks
# and never run one. Per visit, every non-CR pixel scores in the lowest bin and a fraction `t` of
# the CR pixels in the highest, so the visit's TPR at both FPR points is `t` (+ a 1e-4 offset).
GROUP = "globular_cluster/F606W"


def _visit_histograms(t: float, n_cr: int = 10_000, n_noncr: int = 1_000_000) -> np.ndarray:
    from crlib.metrics.histograms import N_SCORE_BINS

    cr = np.zeros(N_SCORE_BINS, np.int64)
    cr[-1] = round(t * n_cr)
    cr[0] = n_cr - cr[-1]
    noncr = np.zeros(N_SCORE_BINS, np.int64)
    noncr[0] = n_noncr
    return np.stack([cr, noncr, cr, noncr])


def _scored(label: str, tpr_by_visit: dict[str, float]) -> EvaluationReport:
    from crlib.metrics.roc import roc_from_histograms, tpr_at_fpr_points

    visits = tuple(sorted(tpr_by_visit))
    stacked = np.stack([_visit_histograms(tpr_by_visit[v]) for v in visits])
    pooled = stacked.sum(axis=0)
    tpr = tpr_at_fpr_points(roc_from_histograms(pooled[0], pooled[1]))
    group = GroupScore(
        "globular_cluster", "F606W", tpr, dict(tpr), int(pooled[0].sum()), int(pooled[1].sum()),
        len(visits), pooled[0], pooled[1], pooled[2], pooled[3], visits=visits, visit_histograms=stacked,
    )  # fmt: skip
    return EvaluationReport(model_label=label, split="test", dataset_id="gate-ds", groups=(group,))


def _test_dataset(root: Path, fields: dict[str, str]) -> Path:
    """A patch dataset on disk with one 8x8 test patch per visit (``{visit: field}``)."""
    import json

    from crlib.training.patches import DATASET_SCHEMA

    directory = root / "gate-dataset"
    directory.mkdir(parents=True)
    for name, dtype in (("images", np.float32), ("masks", np.uint8), ("ignore", np.uint8)):
        np.save(directory / f"{name}.npy", np.zeros((len(fields), 8, 8), dtype))
    index = [
        {
            "visit": v,
            "split": "test",
            "field_type": "globular_cluster",
            "filter": "F606W",
            "rootname": f"{v}aaq",
        }
        for v in fields
    ]
    visits = {v: {"split": "test", "stratum": GROUP, "field": f} for v, f in fields.items()}
    (directory / "manifest.json").write_text(
        json.dumps({"schema": DATASET_SCHEMA, "index": index, "visits": visits})
    )
    return directory


def _register_tiny(
    tracking_uri: str, *, alias: str, tags: dict[str, str] | None = None, manifest: dict | None = None
) -> str:
    """Register a 2-channel network; with ``manifest``, as a crlib training run that logged it."""
    from crlib.model.networks import UNet2

    client = mlflow_client(tracking_uri)
    tags = dict(tags or {})
    with tempfile.TemporaryDirectory() as tmp, active_tracking(tracking_uri):
        state = UNet2("unet2-batchnorm", hidden=2).state_dict()
        written = write_package(Path(tmp) / "pkg", state, ModelMetadata("unet2-batchnorm", hidden=2))
        with mlflow.start_run(experiment_id=experiment_id(client, REGISTRY_EXPERIMENT)) as run:
            uri = log_model_package(Path(tmp) / "pkg", written)
            if manifest is not None:
                mlflow.log_dict(manifest, "dataset/manifest.json")
                tags |= {
                    "crlib.source": "training",
                    "crlib.training_manifest": f"runs:/{run.info.run_id}/dataset/manifest.json",
                }
    return register_version(
        tracking_uri,
        model_uri=uri,
        model_name="deepcr-acs-wfc",
        run_id=run.info.run_id,
        alias=alias,
        tags=tags,
    ).version


TEST_FIELDS = {f"jtst0{i}": f"10775:FIELD{i}" for i in range(1, 7)}


@pytest.fixture
def gate_env(tmp_path: Path, tracking_uri: str, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Settings in the environment, the on-disk test dataset, and constructed scores per version."""
    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("CRLIB_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("CRLIB_DEVICE", "cpu")
    scores: dict[str, dict[str, float]] = {}

    def fake_score(tracking_uri: str, version, dataset, *, device: str) -> EvaluationReport:  # type: ignore[no-untyped-def]
        scored = {str(dataset.index[i]["visit"]) for i in dataset.split_indices("test")}
        return _scored(version.label, {v: t for v, t in scores[version.version].items() if v in scored})

    monkeypatch.setattr("crlib.registry.promotion._score", fake_score)
    return {"dataset": _test_dataset(tmp_path, TEST_FIELDS), "scores": scores, "tracking_uri": tracking_uri}


def _promote_cli(dataset: Path, *extra: str):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from crlib.cli.app import app, register_commands

    register_commands()
    return CliRunner().invoke(app, ["promote", "--dataset", str(dataset), "--device", "cpu", *extra])


def _recorded(database_url: str):  # type: ignore[no-untyped-def]
    from crlib.db.engine import make_engine, session_factory
    from crlib.db.model_registry import decision_history

    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            return decision_history(session, "deepcr-acs-wfc")
    finally:
        engine.dispose()


def test_gate_refuses_a_challenger_trained_on_a_test_visit(gate_env, database_url: str) -> None:  # type: ignore[no-untyped-def]
    uri = gate_env["tracking_uri"]
    bootstrap_registry(uri)  # v1: deepCR's shipped weights, manifest external
    manifest = {
        "visits": {
            "jtst03": {"split": "train", "stratum": GROUP, "field": TEST_FIELDS["jtst03"]},
            "jrep01": {"split": "train", "stratum": GROUP, "field": TEST_FIELDS["jtst05"]},  # repeat visit
            "jown01": {"split": "train", "stratum": GROUP, "field": "10775:ELSEWHERE"},
        },
        "exposures": [],
    }
    assert _register_tiny(uri, alias=CHALLENGER, manifest=manifest) == "2"

    result = _promote_cli(gate_env["dataset"])
    assert result.exit_code == 1, result.output
    refused = [line for line in result.stdout.splitlines() if line.startswith("refused: ")]
    assert len(refused) == 2
    assert "challenger deepcr-acs-wfc/2 was trained on 1 test visit(s) of this dataset (jtst03" in refused[0]
    assert "other visits of 1 test field(s) (10775:FIELD5)" in refused[1]
    assert "note: champion deepcr-acs-wfc/1: training manifest external" in result.stdout
    assert "deepCR-ACS/WFC paper's training set" in result.stdout
    assert get_version(uri, "deepcr-acs-wfc", CHAMPION).version == "1"

    (row,) = _recorded(database_url)
    assert row.outcome == "refused" and not row.promoted and row.mean_delta_points is None
    assert [r.split(" (")[0] for r in row.reasons] == [
        "challenger deepcr-acs-wfc/2 was trained on 1 test visit(s) of this dataset",
        "challenger deepcr-acs-wfc/2 was trained on other visits of 1 test field(s)",
    ]
    (summary,) = row.comparisons  # nothing was scored: only the gate summary
    assert summary["kind"] == "gate_summary" and summary["ci_low_points"] is None
    assert summary["provenance"]["champion"]["manifest"] == "external"
    assert summary["provenance"]["challenger"]["seen_visits"] == 3
    assert (summary["test_fields"], summary["test_visits"]) == (6, 6)
    # ... and in the registry, on the refused version (the MLflow side of the record)
    import json

    tags = get_version(uri, "deepcr-acs-wfc", "2").tags
    assert tags["crlib.gate.outcome"] == "refused"
    assert json.loads(tags["crlib.gate.reasons"]) == [line.removeprefix("refused: ") for line in refused]

    # told to, the gate scores the four test fields neither model saw, and says which it left out
    from crlib.training.patches import open_patch_dataset

    gate_env["scores"]["1"] = {v: 0.80 for v in TEST_FIELDS}
    gate_env["scores"]["2"] = {v: 0.81 for v in TEST_FIELDS}
    dataset = open_patch_dataset(gate_env["dataset"])
    kept = promote(
        uri,
        model_name="deepcr-acs-wfc",
        dataset=dataset,
        dry_run=True,
        thresholds=GateThresholds(exclude_seen=True),
    )
    assert kept.promoted and (kept.test_fields, kept.test_visits) == (4, 4) and kept.ci_low_points > 0.9
    assert kept.provenance["excluded_test_visits"] == ["jtst03", "jtst05"]
    assert any(n.startswith("--exclude-seen: 2 test visit(s) of 2 field(s)") for n in kept.notes)


def test_gate_refuses_a_positive_mean_gain_whose_interval_includes_a_loss(
    gate_env, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    import json

    uri, scores = gate_env["tracking_uri"], gate_env["scores"]
    assert _register_tiny(uri, alias=CHAMPION, tags={"crlib.truth_source": "real"}) == "1"
    assert _register_tiny(uri, alias=CHALLENGER, tags={"crlib.truth_source": "real"}) == "2"
    scores["1"] = {v: 0.80 for v in TEST_FIELDS}
    # +3 points on two fields, -1 point on four: +0.33 points on average, no number drops 0.5
    scores["2"] = {v: 0.83 if v in ("jtst01", "jtst02") else 0.79 for v in TEST_FIELDS}

    result = _promote_cli(gate_env["dataset"])
    assert result.exit_code == 1, result.output
    assert "ok   globular_cluster/F606W" in result.stdout  # every number passes on its own
    (refused,) = [line for line in result.stdout.splitlines() if line.startswith("refused: ")]
    assert refused.startswith("refused: mean gain +0.33")
    assert "95% confidence interval [-" in refused and "includes a loss" in refused
    assert "over 6 test field(s) (1000 resamples, seed 0)" in result.stdout

    (row,) = _recorded(database_url)
    assert row.outcome == "refused" and 0.3 < row.mean_delta_points < 0.35
    assert row.reasons == (refused.removeprefix("refused: "),)
    numbers, summary = row.comparisons[:-1], row.comparisons[-1]
    assert len(numbers) == 4 and not any(c["failed"] for c in numbers)
    assert summary["kind"] == "gate_summary" and summary["failed"]
    assert summary["ci_low_points"] < 0 < summary["mean_delta_points"] < summary["ci_high_points"]
    assert (summary["confidence"], summary["resamples"], summary["seed"]) == (0.95, 1000, 0)
    tags = get_version(uri, "deepcr-acs-wfc", "2").tags
    assert tags["crlib.gate.ci_low_points"].startswith("-") and tags["crlib.gate.outcome"] == "refused"
    assert json.loads(tags["crlib.gate.reasons"]) == [refused.removeprefix("refused: ")]

    # the same gain on every field: the interval excludes a loss and the challenger is promoted
    scores["2"] = {v: 0.82 for v in TEST_FIELDS}
    promoted = _promote_cli(gate_env["dataset"])
    assert promoted.exit_code == 0, promoted.output
    assert "promoted to champion" in promoted.output
    assert get_version(uri, "deepcr-acs-wfc", CHAMPION).version == "2"


def test_gate_refuses_simulator_trained_challengers_unless_allowed(gate_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from crlib.training.patches import open_patch_dataset

    uri, scores = gate_env["tracking_uri"], gate_env["scores"]
    dataset = open_patch_dataset(gate_env["dataset"])
    assert _register_tiny(uri, alias=CHAMPION, tags={"crlib.truth_source": "real"}) == "1"
    assert _register_tiny(uri, alias=CHALLENGER, tags={"crlib.truth_source": "simulator"}) == "2"
    scores["1"] = {v: 0.80 for v in TEST_FIELDS}
    scores["2"] = {v: 0.85 for v in TEST_FIELDS}

    refused = promote(uri, model_name="deepcr-acs-wfc", dataset=dataset, dry_run=True)
    assert not refused.promoted and refused.ci_low_points > 4.9
    (reason,) = refused.reasons
    assert "trained on simulator data (crlib.truth_source=simulator)" in reason
    assert "cannot become champion of the real-data model deepcr-acs-wfc" in reason
    assert "--allow-simulated" in reason

    allowed = promote(
        uri, model_name="deepcr-acs-wfc", dataset=dataset, thresholds=GateThresholds(allow_simulated=True)
    )
    assert allowed.applied and allowed.reasons == ()
    assert any("allowed by --allow-simulated" in note for note in allowed.notes)
    assert get_version(uri, "deepcr-acs-wfc", CHAMPION).version == "2"


def test_one_test_field_gives_no_interval_and_fine_tuned_chains_are_followed(
    gate_env, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from crlib.training.patches import open_patch_dataset

    uri, scores = gate_env["tracking_uri"], gate_env["scores"]
    bootstrap_registry(uri)  # v1
    # v2 trained (from deepCR) on jtst04; v3 fine-tuned from v2 on other visits: v3 saw jtst04 too
    seen = {"visits": {"jtst04": {"split": "validation", "stratum": GROUP}}, "exposures": []}
    assert _register_tiny(uri, alias="", tags={"crlib.initial": "deepCR ACS-WFC"}, manifest=seen) == "2"
    other = {"visits": {"jelse1": {"split": "train", "stratum": GROUP}}, "exposures": []}
    assert (
        _register_tiny(uri, alias=CHALLENGER, tags={"crlib.initial": "deepcr-acs-wfc/2"}, manifest=other)
        == "3"
    )
    dataset = open_patch_dataset(gate_env["dataset"])
    leaked = promote(uri, model_name="deepcr-acs-wfc", dataset=dataset, dry_run=True)
    assert (
        "challenger deepcr-acs-wfc/3 was trained on 1 test visit(s) of this dataset (jtst04"
        in leaked.reasons[0]
    )
    assert leaked.provenance["challenger"]["manifest"] == "external"  # v2 started from deepCR's weights
    assert len(leaked.provenance["challenger"]["manifests"]) == 2

    one = _test_dataset(tmp_path / "one", {"jtst01": TEST_FIELDS["jtst01"]})
    scores["1"], scores["3"] = {"jtst01": 0.80}, {"jtst01": 0.99}
    lonely = promote(uri, model_name="deepcr-acs-wfc", dataset=open_patch_dataset(one), dry_run=True)
    assert not lonely.promoted and lonely.mean_delta_points > 18
    assert lonely.reasons == (
        "only 1 test field(s) (10775:FIELD1): the mean gain's confidence interval needs at least 2 "
        "independent test fields (proposal, target)",
    )


def test_resampled_scores_match_the_pooled_roc_and_the_interval_is_seeded() -> None:
    from crlib.metrics.histograms import N_SCORE_BINS
    from crlib.metrics.roc import roc_from_histograms, tpr_at_fpr
    from crlib.training.evaluation import bootstrap_mean_gain, tpr_at_fpr_rows

    rng = np.random.default_rng(7)
    cr = rng.poisson(2.0, (6, N_SCORE_BINS)) * (rng.random((6, N_SCORE_BINS)) < 0.3)
    noncr = rng.poisson(200.0, (6, N_SCORE_BINS)) * (rng.random((6, N_SCORE_BINS)) < 0.5)
    cr[5] = 0  # no CR pixels: undefined
    rows = tpr_at_fpr_rows(cr.astype(np.float64), noncr.astype(np.float64), ["0.0005", "0.005"])
    for key, values in rows.items():
        expected = [tpr_at_fpr(roc_from_histograms(c, n), float(key)) for c, n in zip(cr, noncr, strict=True)]
        np.testing.assert_array_equal(values, expected)  # the one TPR definition, bit for bit
        assert np.isnan(values[5])

    champion = _scored("a", {"v1": 0.8, "v2": 0.8, "v3": 0.8, "v4": 0.8})
    challenger = _scored("b", {"v1": 0.9, "v2": 0.78, "v3": 0.79, "v4": 0.81})
    numbers = [(GROUP, "0.0005", False), (GROUP, "0.005", True)]
    first = bootstrap_mean_gain(champion, challenger, numbers, resamples=500, seed=3)
    assert first == bootstrap_mean_gain(champion, challenger, numbers, resamples=500, seed=3)
    assert first.low_points < 0 < first.mean_delta_points < first.high_points and first.units == 4
    # v1 and v2 are one field (repeat visits): three units, resampled together
    grouped = bootstrap_mean_gain(champion, challenger, numbers, unit_of={"v2": "v1"}, resamples=500, seed=3)
    assert grouped.units == 3 and grouped.mean_delta_points == pytest.approx(first.mean_delta_points)


def test_each_decision_records_both_versions_training_splits_through_their_chain(
    gate_env, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    """A fine-tuned version has seen what its starting version saw: its scores there are in-sample."""
    from crlib.db.engine import make_engine, session_factory
    from crlib.db.training_splits import split_of, training_splits
    from crlib.registry.decisions import database_recorder
    from crlib.training.patches import open_patch_dataset

    uri, scores = gate_env["tracking_uri"], gate_env["scores"]
    bootstrap_registry(uri)  # v1: deepCR's shipped weights, external
    first = {
        "visits": {
            "jown01": {"split": "train"},
            "jval01": {"split": "validation"},
            "jold01": {"split": "test"},
        },
        "exposures": [],
    }
    tags = {"crlib.initial": "deepCR ACS-WFC", "crlib.truth_source": "real", "crlib.dataset_id": "ds-first"}
    assert _register_tiny(uri, alias="", tags=tags, manifest=first) == "2"
    # v3 fine-tuned from v2 on a dataset whose split put jown01 and jval01 in test: v3 still saw them
    second = {
        "visits": {"jnew01": {"split": "train"}, "jown01": {"split": "test"}, "jval01": {"split": "test"}},
        "exposures": [],
    }
    tags = {
        "crlib.initial": "deepcr-acs-wfc/2",
        "crlib.truth_source": "real",
        "crlib.dataset_id": "ds-second",
    }
    assert _register_tiny(uri, alias=CHALLENGER, tags=tags, manifest=second) == "3"
    scores["1"] = {v: 0.80 for v in TEST_FIELDS}
    scores["3"] = {v: 0.80 for v in TEST_FIELDS}

    engine = make_engine(database_url)
    try:
        from crlib.db.migrate import upgrade

        upgrade(engine)
        sessions = session_factory(engine)
        decision = promote(
            uri,
            model_name="deepcr-acs-wfc",
            dataset=open_patch_dataset(gate_env["dataset"]),
            dry_run=True,
            recorder=database_recorder(sessions, tracking_uri=uri),
        )
        assert not decision.promoted  # the same scores: no gain (what is recorded does not depend on it)
        with sessions() as session:
            recorded = {s.version: (s.training_dataset, s.visits) for s in training_splits(session)}
            assert recorded == {
                "1": ("external", {"train": 0, "validation": 0, "test": 0}),
                "3": ("ds-second+ds-first", {"train": 2, "validation": 1, "test": 1}),
            }
            found = {
                v: split_of(session, v, model_name="deepcr-acs-wfc", version="3") for v in second["visits"]
            }
            found |= {
                v: split_of(session, v, model_name="deepcr-acs-wfc", version="3")
                for v in ("jold01", "jzzz01")
            }
            assert found == {
                "jnew01": "train",
                "jown01": "train",  # trained on by v2: seen wins over v3's own test split
                "jval01": "validation",
                "jold01": "test",
                "jzzz01": "unseen",
            }
    finally:
        engine.dispose()


def test_the_gate_scores_only_under_the_profile_s_scoring_rules(
    gate_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Test patches cut under another border (or DQ rule) than the profile's are refused, unscored."""
    import dataclasses
    import json

    from crlib.profiles import ACS_WFC, ScoringRules
    from crlib.training.patches import open_patch_dataset

    uri, scores = gate_env["tracking_uri"], gate_env["scores"]
    assert _register_tiny(uri, alias=CHAMPION, tags={"crlib.truth_source": "real"}) == "1"
    assert _register_tiny(uri, alias=CHALLENGER, tags={"crlib.truth_source": "real"}) == "2"
    scores["1"] = {v: 0.80 for v in TEST_FIELDS}
    scores["2"] = {v: 0.82 for v in TEST_FIELDS}
    dataset = open_patch_dataset(gate_env["dataset"])
    passed = promote(uri, model_name="deepcr-acs-wfc", dataset=dataset, dry_run=True)
    assert passed.promoted and passed.scoring == {
        "border_px": 128,
        "dq_excluded": True,
        "label_dq_bits": 12288,
    }
    assert passed.summary_entry()["scoring"] == passed.scoring

    manifest = json.loads((gate_env["dataset"] / "manifest.json").read_text())
    manifest["parameters"] = {"patch": 8, "border": 64, "exclude_dq": True}
    (gate_env["dataset"] / "manifest.json").write_text(json.dumps(manifest))
    narrow = promote(uri, model_name="deepcr-acs-wfc", dataset=open_patch_dataset(gate_env["dataset"]))
    assert not narrow.applied and narrow.comparisons == () and narrow.scoring["border_px"] == 64
    (reason,) = narrow.reasons
    assert "were cut under border 64 px, DQ-flagged pixels excluded" in reason
    assert "instrument profile's rules (border 128 px, DQ-flagged pixels excluded)" in reason
    tags = get_version(uri, "deepcr-acs-wfc", "2").tags
    assert json.loads(tags["crlib.gate.scoring"])["border_px"] == 64

    # the same dataset passes once the profile itself scores under those rules
    other = dataclasses.replace(ACS_WFC, scoring=ScoringRules(border_px=64))
    monkeypatch.setattr("crlib.profiles.get_profile", lambda name: other)
    moved = promote(uri, model_name="deepcr-acs-wfc", dataset=open_patch_dataset(gate_env["dataset"]))
    assert moved.applied and moved.scoring["border_px"] == 64


def test_training_splits_are_recorded_from_the_registry(gate_env) -> None:  # type: ignore[no-untyped-def]
    """``crlib models --bootstrap`` records deepCR's weights as external; ``--from-registry`` the rest."""
    import json

    from typer.testing import CliRunner

    from crlib.cli.app import app, register_commands

    register_commands()
    runner = CliRunner()

    def splits() -> dict[str, tuple]:
        result = runner.invoke(app, ["stats", "training-splits", "--format", "json"])
        assert result.exit_code == 0, result.output
        return {r["model"]: (r["training_dataset"], r["train"], r["test"]) for r in json.loads(result.stdout)}

    assert runner.invoke(app, ["models", "--bootstrap"]).exit_code == 0
    assert splits() == {"deepcr-acs-wfc:1": ("external", 0, 0)}
    manifest = {"visits": {"jown01": {"split": "train"}, "jtst01": {"split": "test"}}, "exposures": []}
    tags = {"crlib.initial": "deepcr-acs-wfc/1", "crlib.dataset_id": "ds-own"}
    assert _register_tiny(gate_env["tracking_uri"], alias=CHALLENGER, tags=tags, manifest=manifest) == "2"
    assert _register_tiny(gate_env["tracking_uri"], alias="") == "3"  # no manifest: left alone
    assert "deepcr-acs-wfc:2" not in splits()

    result = runner.invoke(app, ["stats", "training-splits", "--from-registry", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "deepcr-acs-wfc:2: recorded 2 visits of dataset ds-own" in result.stderr
    assert "deepcr-acs-wfc:3: no readable training manifest in MLflow; left as recorded" in result.stderr
    assert splits() == {"deepcr-acs-wfc:1": ("external", 0, 0), "deepcr-acs-wfc:2": ("ds-own", 1, 1)}
