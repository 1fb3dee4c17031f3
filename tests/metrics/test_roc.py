from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crlib.metrics.histograms import score_histograms
from crlib.metrics.roc import plot_roc, roc_from_histograms, tpr_at_fpr, tpr_at_fpr_points


def _case(seed: int, shape=(400, 500)):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape) < 0.02
    logits = rng.normal(-7, 2.5, shape) + truth * rng.normal(10, 3, shape)
    return (1 / (1 + np.exp(-logits))).astype(np.float16), truth


def test_roc_matches_deepcrs_confusion_counts_at_each_threshold() -> None:
    from deepCR.util import maskMetric

    prob, truth = _case(0)
    valid = np.ones_like(truth)
    curve = roc_from_histograms(*score_histograms(prob, truth, valid))
    assert curve.fpr[0] == 0 and curve.fpr[-1] == 1 and np.all(np.diff(curve.fpr) >= 0)
    for index in (50, 300, 700, 1200):
        t = curve.thresholds[index]
        tp, tn, fp, fn = maskMetric((prob > t).astype(int), truth.astype(int))
        assert curve.tpr[index] == pytest.approx(tp / (tp + fn))
        assert curve.fpr[index] == pytest.approx(fp / (fp + tn))


def test_tpr_at_fixed_fpr_is_interpolated_between_curve_points() -> None:
    prob, truth = _case(1)
    curve = roc_from_histograms(*score_histograms(prob, truth, np.ones_like(truth)))
    values = tpr_at_fpr_points(curve)
    assert set(values) == {"0.0005", "0.005"}
    assert 0 < values["0.0005"] < values["0.005"] <= 1
    # brute force: the best TPR among thresholds with FPR <= target bounds the interpolated value below
    below = curve.tpr[curve.fpr <= 0.005].max()
    above = curve.tpr[curve.fpr >= 0.005].min()
    assert below <= values["0.005"] <= above


def test_no_cr_pixels_gives_nan() -> None:
    prob, truth = _case(2)
    curve = roc_from_histograms(*score_histograms(prob, np.zeros_like(truth), np.ones_like(truth)))
    assert np.isnan(tpr_at_fpr(curve, 0.005))


def test_roc_plot_is_a_png(tmp_path: Path) -> None:
    prob, truth = _case(3)
    curve = roc_from_histograms(*score_histograms(prob, truth, np.ones_like(truth)))
    path = plot_roc({"model": curve}, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
