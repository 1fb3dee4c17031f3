"""bf16 vs fp32 on the same truth (issue #16 item 3): the shifts, the verdict, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from testsupport.flc import synthetic_chip

from crlib.bench.accuracy import (
    ALL_FILTERS,
    ScoredExposure,
    VisitOutcome,
    deepcr_kind,
    pool_report_groups,
    run_accuracy_benchmark,
)
from crlib.bench.precision import BF16_MAX_TPR_SHIFT_POINTS, bf16_verdict, precision_shifts
from crlib.errors import ConfigError
from crlib.metrics.scoring import metrics_from_scores, score_chip
from crlib.model import inference


def _exposure(rootname: str, seed: int, *, bf16_noise: float) -> ScoredExposure:
    """One exposure scored by 'global' and by 'global_bf16' (the same scores plus ``bf16_noise``)."""
    rng = np.random.default_rng(seed)
    _, truth = synthetic_chip((120, 150), seed=seed, n_crs=60)
    valid = np.ones_like(truth)
    fp32 = np.clip(truth * 0.9 + rng.normal(0.05, 0.2, truth.shape), 0, 1).astype(np.float32)
    bf16 = np.clip(fp32 + rng.normal(0.0, bf16_noise, truth.shape), 0, 1).astype(np.float32)
    metrics = {}
    for kind, probability in (("global", fp32), ("global_bf16", bf16)):
        scores = score_chip(probability, probability > 0.5, truth, valid)
        metrics[kind] = metrics_from_scores(
            scores, rootname=rootname, model_name="ACS-WFC", model_version="t", field_type="extragalactic"
        )
    return ScoredExposure(rootname, "jv01", "extragalactic", "F606W", "ok", metrics, {})


def _report(bf16_noise: float):
    from crlib.bench.accuracy import AccuracyReport

    exposures = [_exposure(f"ja0{i}", i, bf16_noise=bf16_noise) for i in range(1, 4)]
    visits = [VisitOutcome("jv01", "extragalactic", "F606W", {e.rootname: "ok" for e in exposures}, {}, {})]
    kinds = ("global", "global_bf16")
    groups = pool_report_groups(
        exposures, visits, field_types=("extragalactic",), filters=("F606W",), kinds=kinds
    )
    return AccuracyReport({"models": list(kinds)}, tuple(visits), tuple(exposures), groups, 0.0)


def test_kind_names_split_into_model_and_precision() -> None:
    assert deepcr_kind("global") == ("global", "fp32")
    assert deepcr_kind("per_filter_bf16") == ("per_filter", "bf16")
    assert deepcr_kind("lacosmic") == ("lacosmic", "fp32")


def test_identical_scores_shift_nothing_and_pass() -> None:
    shifts = precision_shifts(_report(bf16_noise=0.0))
    # per group (F606W and all) x plain/dilated x two FPR points
    assert len(shifts) == 2 * 2 * 2
    assert all(s.shift_points == 0.0 for s in shifts)
    verdict = bf16_verdict(shifts)
    assert verdict["pass"] is True and verdict["compared"] == 4 and verdict["max_abs_shift_points"] == 0.0


def test_a_precision_that_moves_the_tpr_fails_the_verdict_naming_the_worst_case() -> None:
    shifts = precision_shifts(_report(bf16_noise=0.15))
    verdict = bf16_verdict(shifts)
    per_field_type = [abs(s.shift_points) for s in shifts if s.filter == ALL_FILTERS]
    assert verdict["max_abs_shift_points"] == max(per_field_type) >= BF16_MAX_TPR_SHIFT_POINTS
    assert verdict["pass"] is False
    worst = verdict["worst"]
    assert worst["filter"] == ALL_FILTERS and abs(worst["shift_points"]) == verdict["max_abs_shift_points"]
    # the same shifts pass under a limit above the largest one
    assert bf16_verdict(shifts, limit_points=verdict["max_abs_shift_points"] + 1)["pass"] is True


def test_without_a_bf16_twin_there_is_nothing_to_compare() -> None:
    report = _report(bf16_noise=0.0)
    report.settings["models"] = ["global"]
    assert precision_shifts(report) == ()
    verdict = bf16_verdict(())
    assert verdict["pass"] is None and math.isnan(verdict["max_abs_shift_points"])


def test_bf16_models_without_native_bf16_are_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset())
    with pytest.raises(ConfigError, match="need native bf16"):
        run_accuracy_benchmark(tmp_path, models=("global", "global_bf16"), device="cpu")
    assert not (tmp_path / "crlib-accuracy" / "archive").exists()


@pytest.mark.skipif(
    not inference.bf16_supported(inference.resolve_device("cpu")), reason="this CPU has no native bf16"
)
def test_cli_scores_both_precisions_on_the_same_truth(tmp_path: Path, capsys) -> None:
    from crlib.cli.app import main

    args = ["bench", "accuracy", "--field-type", "extragalactic", "--filter", "F606W", "--seed", "3"]
    args += ["--model", "global", "--model", "global_bf16", "--device", "cpu", "--effects", "basic"]
    args += ["--workdir", str(tmp_path)]
    with pytest.raises(SystemExit) as done:
        main([*args, "--json"])
    assert done.value.code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["settings"]["models"] == ["global", "global_bf16"]
    assert "cpu/bf16" in document["settings"]["device"] and "cpu/fp32" in document["settings"]["device"]
    exposure = document["exposures"][0]
    assert set(exposure["metrics"]) == {"global", "global_bf16"}
    # the same truth: equal CR pixel counts (TP + FN) under both precisions
    fp32, bf16 = exposure["metrics"]["global"], exposure["metrics"]["global_bf16"]
    assert fp32["tp"] + fp32["fn"] == bf16["tp"] + bf16["fn"] > 0
    comparison = document["precision_comparison"]
    assert {s["model"] for s in comparison["shifts"]} == {"global"}
    verdict = comparison["verdict"]
    assert verdict["limit_points"] == BF16_MAX_TPR_SHIFT_POINTS and verdict["compared"] == 4
    assert isinstance(verdict["pass"], bool)
    assert verdict["pass"] == (verdict["max_abs_shift_points"] < BF16_MAX_TPR_SHIFT_POINTS)
