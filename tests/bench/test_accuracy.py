"""``crlib bench accuracy``: pooling, the report's structure, and one tiny real run (simulate, drizzle truth,
deepCR global + per-filter models, LACosmic sweep) that is reproducible."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from testsupport.flc import synthetic_chip

from crlib.bench.accuracy import (
    ALL_FILTERS,
    AccuracyReport,
    ScoredExposure,
    VisitOutcome,
    fpr_reach,
    pool_report_groups,
    run_accuracy_benchmark,
)
from crlib.bench.deepcr_reference import PAPER_TABLE3
from crlib.errors import ConfigError
from crlib.metrics.histograms import N_SCORE_BINS
from crlib.metrics.roc import roc_from_histograms, tpr_at_fpr_points
from crlib.metrics.scoring import metrics_from_scores, score_chip
from crlib.simulate.effects import SimEffects

KINDS = ("global", "lacosmic")


def _exposure(rootname: str, filter_name: str, seed: int) -> ScoredExposure:
    """A scored exposure whose two 'detectors' are noisy scores of a synthetic chip's truth."""
    rng = np.random.default_rng(seed)
    _, truth = synthetic_chip((120, 150), seed=seed, n_crs=60)
    valid = np.ones_like(truth)
    valid[:5] = False
    metrics = {}
    for kind, spread in (("global", 0.15), ("lacosmic", 0.45)):
        probability = np.clip(truth * 0.9 + rng.normal(0.05, spread, truth.shape), 0, 1).astype(np.float32)
        scores = score_chip(probability, probability > 0.5, truth, valid)
        metrics[kind] = metrics_from_scores(
            scores, rootname=rootname, model_name=kind.upper(), model_version="t", field_type="extragalactic"
        )
    return ScoredExposure(rootname, "jv01", "extragalactic", filter_name, "ok", metrics, {})


def test_groups_pool_exposure_histograms_per_filter_and_per_field_type() -> None:
    exposures = [_exposure("ja01", "F606W", 1), _exposure("ja02", "F606W", 2), _exposure("ja03", "F814W", 3)]
    visits = [
        VisitOutcome(
            "jv01", "extragalactic", "F606W", {"ja01": "ok", "ja02": "ok", "ja09": "suspect"}, {}, {}
        ),
        VisitOutcome("jv02", "extragalactic", "F814W", {"ja03": "ok", "ja08": "failed"}, {}, {}),
    ]
    groups = pool_report_groups(
        exposures,
        visits,
        field_types=("extragalactic", "resolved_galaxy"),
        filters=("F606W", "F814W"),
        kinds=KINDS,
    )
    keys = [(g.field_type, g.filter) for g in groups]
    assert keys == [
        ("extragalactic", "F606W"),
        ("extragalactic", "F814W"),
        ("extragalactic", ALL_FILTERS),
        ("resolved_galaxy", "F606W"),
        ("resolved_galaxy", "F814W"),
        ("resolved_galaxy", ALL_FILTERS),
    ]
    f606w, f814w, everything = groups[0], groups[1], groups[2]
    assert (f606w.exposures, f814w.exposures, everything.exposures) == (2, 1, 3)
    assert f606w.truth_status == {"ok": 2, "suspect": 1}
    assert everything.truth_status == {"failed": 1, "ok": 3, "suspect": 1}
    assert f606w.paper == PAPER_TABLE3[("extragalactic", "F606W")] and everything.paper is None
    # pooled = the ROC of the summed histograms, not a mean of per-exposure TPRs
    for kind in KINDS:
        for label, hist_names in (
            ("plain", ("hist_cr", "hist_noncr")),
            ("dilated", ("hist_cr_dilated", "hist_noncr_dilated")),
        ):
            sums = [
                np.sum([getattr(e.metrics[kind], name) for e in exposures], axis=0) for name in hist_names
            ]
            assert everything.tpr[kind][label] == tpr_at_fpr_points(roc_from_histograms(*sums))
    assert everything.n_cr == f606w.n_cr + f814w.n_cr > 0
    assert everything.models == {"global": "GLOBAL", "lacosmic": "LACOSMIC"}
    # the better-separated scores win at both FPR points
    for fpr in ("0.0005", "0.005"):
        assert everything.tpr["global"]["plain"][fpr] > everything.tpr["lacosmic"]["plain"][fpr]
    empty = groups[3]
    assert empty.exposures == 0 and empty.n_cr == 0 and empty.truth_status == {}
    assert all(math.isnan(v) for v in empty.tpr["global"]["plain"].values())
    assert not empty.within_reach("global", "plain", "0.005")


def test_fpr_reach_spans_the_curves_own_points() -> None:
    hist_cr = np.zeros(N_SCORE_BINS, np.int64)
    hist_noncr = np.zeros(N_SCORE_BINS, np.int64)
    hist_cr[[-1, -300]] = (90, 10)
    hist_noncr[[-1, -300, 0]] = (1, 9, 990)  # 1 of 1000 non-CR pixels in the top bin: FPR never below 0.1%
    lowest, highest = fpr_reach(roc_from_histograms(hist_cr, hist_noncr))
    assert lowest == pytest.approx(0.001) and highest == pytest.approx(0.01)


def test_bad_parameters_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="3-8"):
        run_accuracy_benchmark(tmp_path, exposures=2)
    with pytest.raises(ConfigError, match="models"):
        run_accuracy_benchmark(tmp_path, models=("nope",))
    with pytest.raises(ConfigError, match="field types"):
        run_accuracy_benchmark(tmp_path, field_types=("mixed",))
    with pytest.raises(ConfigError, match="sigclip"):
        run_accuracy_benchmark(tmp_path, sigclips=())
    assert not (tmp_path / "crlib-accuracy").exists()


TINY = {
    "field_types": ("globular_cluster",),
    "filters": ("F606W",),
    "size": "small",
    "exposures": 3,
    "seed": 3,
}


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[AccuracyReport, Path]:
    workdir = tmp_path_factory.mktemp("accuracy")
    report = run_accuracy_benchmark(
        workdir,
        field_types=("globular_cluster",),
        filters=("F606W",),
        size="small",
        exposures=3,
        seed=3,
        sigclips=(4.0, 8.0),
        include_suspect=True,
        device="cpu",
        threads=1,
        effects=SimEffects.basic(),
    )
    return report, workdir


@pytest.mark.slow
def test_tiny_run_reports_every_detector_next_to_the_paper(tiny_report, capsys) -> None:
    report, workdir = tiny_report
    assert [(g.field_type, g.filter) for g in report.groups] == [
        ("globular_cluster", "F606W"),
        ("globular_cluster", ALL_FILTERS),
    ]
    cell, pooled = report.groups
    statuses = report.truth_status_counts()
    assert sum(statuses.values()) == 3
    assert cell.exposures == statuses.get("ok", 0) + statuses.get("suspect", 0) >= 1
    assert cell.models == {"global": "ACS-WFC", "per_filter": "ACS-WFC-F606W", "lacosmic": "LACosmic"}
    assert cell.paper == PAPER_TABLE3[("globular_cluster", "F606W")] and pooled.paper is None
    assert pooled.tpr == cell.tpr and pooled.n_cr == cell.n_cr > 1000
    for kind in ("global", "per_filter", "lacosmic"):
        for label in ("plain", "dilated"):
            low, high = cell.tpr[kind][label]["0.0005"], cell.tpr[kind][label]["0.005"]
            assert 0.0 <= low <= high <= 1.0
        # every detector saw the same truth pixels
        assert sum(sum(e.metrics[kind].hist_cr) for e in report.exposures) == cell.n_cr
    assert cell.tpr["global"]["plain"]["0.005"] > 0.8
    assert cell.tpr["global"]["plain"]["0.0005"] > cell.tpr["lacosmic"]["plain"]["0.0005"] + 0.05
    assert cell.within_reach("global", "plain", "0.0005") and cell.within_reach("global", "plain", "0.005")
    # what the dilation adds at the plain mask's threshold: the recorded histograms say it exactly
    for fpr_key, fpr in (("0.0005", 0.0005), ("0.005", 0.005)):
        effect = cell.dilation["global"][fpr_key]
        assert effect["plain_fpr"] == pytest.approx(fpr)
        assert effect["plain_tpr"] == pytest.approx(cell.tpr["global"]["plain"][fpr_key])
        assert effect["dilated_tpr"] >= effect["plain_tpr"] and effect["dilated_fpr"] > effect["plain_fpr"]
        assert 0.0 <= effect["ring_cr_share"] <= 1.0
    # scored as the pipeline scores: the profile's 128-px border and DQ exclusion, on 5-sigma truth
    assert report.settings["scoring"] == {"border_px": 128, "exclude_dq": True}
    assert report.settings["truth_min_peak_snr"] == 5.0
    for exposure in report.exposures:
        assert {(m.border_px, m.dq_excluded) for m in exposure.metrics.values()} == {(128, True)}
        n_scored = exposure.metrics["global"].tp + exposure.metrics["global"].fp
        n_scored += exposure.metrics["global"].fn + exposure.metrics["global"].tn
        assert n_scored <= 2 * (1024 - 256) * (512 - 256)  # two small chips inside the border
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["groups"][0]["paper"]["plain"]["0.005"] == pytest.approx(0.9745)
    assert "not the paper's real test sets" in payload["caveat"] and payload["evaluation_notes"]
    run_dir = workdir / "crlib-accuracy"
    assert not list(run_dir.rglob("*_flc.fits")) and not list(run_dir.rglob("*_crpred.fits"))
    assert list(run_dir.glob("archive/*/truth/visit.json"))

    from crlib.cli.accuracy import print_report

    print_report(report)
    out = capsys.readouterr().out
    assert "85.98 / 97.45" in out and "95.52 / 98.56" in out  # paper, plain and dilated
    assert f"{100 * cell.tpr['global']['plain']['0.0005']:.2f}" in out
    assert "not the paper's real test sets" in out and "LACosmic: objlim globular_cluster 2.6" in out
    assert "scoring border 128 px, DQ-flagged pixels excluded, truth pruned below 5 sigma" in out
    ring, plain = (cell.dilation["global"]["0.0005"][k] for k in ("ring_cr_share", "plain_tpr"))
    assert f"globular_cluster ours: ACS-WFC: at FPR 0.05%: TPR {100 * plain:.2f} -> " in out
    assert f"ring {100 * ring:.1f} % CR" in out


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers_through_the_cli(tiny_report, tmp_path: Path, capsys) -> None:
    from crlib.cli.app import main

    report, _ = tiny_report
    args = ["bench", "accuracy", "--field-type", "globular_cluster", "--filter", "F606W", "--seed", "3"]
    args += ["--effects", "basic"]
    args += [
        "--model",
        "global",
        "--include-suspect",
        "--device",
        "cpu",
        "--workdir",
        str(tmp_path),
        "--json",
    ]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    again = json.loads(capsys.readouterr().out)
    assert again["settings"]["models"] == ["global"]
    assert again["settings"]["effects"] == SimEffects.basic().as_dict()
    first = report.group("globular_cluster", "F606W")
    second = again["groups"][0]
    assert second["n_cr"] == first.n_cr and second["exposures"] == first.exposures
    assert second["tpr"]["global"] == first.tpr["global"]


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("option", "expected"), [([], SimEffects.realistic()), (["--effects", "basic"], SimEffects())]
)
def test_effects_reach_the_simulator(option, expected, tmp_path: Path, monkeypatch) -> None:
    """``--effects`` (default realistic) is what ``simulate_visit`` is given (stopped before any work)."""
    import crlib.simulate
    from crlib.cli.app import main

    seen: list[SimEffects | None] = []

    def fake_simulate_visit(*args, effects=None, **kwargs):
        seen.append(effects)
        raise _Stop

    monkeypatch.setattr(crlib.simulate, "simulate_visit", fake_simulate_visit)
    args = ["bench", "accuracy", "--field-type", "resolved_galaxy", "--filter", "F606W", "--model", "global"]
    with pytest.raises(_Stop):
        main([*args, "--device", "cpu", "--workdir", str(tmp_path), *option])
    assert seen == [expected]
