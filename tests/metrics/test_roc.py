from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from crlib.metrics.histograms import dilated_probability, score_histograms
from crlib.metrics.roc import (
    dilation_at_plain_fpr,
    fpr_points_inside_top_bin,
    interpolated_tpr,
    plot_roc,
    roc_from_histograms,
    roc_points,
    top_bin_fpr,
    tpr_at_fpr,
    tpr_at_fpr_from_histograms,
    tpr_at_fpr_points,
)


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


# ROC points share FPR 0.005 (TPR 0.15, 0.40, 0.70): bins with CR pixels and no non-CR pixel.
TIE_CR = [10, 20, 30, 25, 5, 10]
TIE_NONCR = [9900, 50, 0, 0, 40, 10]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.0, 0.0),
        (0.001, 0.10),
        (0.003, 0.125),  # (0.001, 0.10) to the bottom of the run at 0.005, (0.005, 0.15)
        (0.005, 0.70),  # on the run: its top
        (0.007, 0.78),  # from the top of the run, (0.005, 0.70), to (0.01, 0.90)
        (0.5, 0.90 + 0.10 * (0.49 / 0.99)),
        (1.0, 1.0),
    ],
)
def test_tpr_at_fpr_is_the_height_of_the_roc_polyline(target: float, expected: float) -> None:
    assert tpr_at_fpr_from_histograms(TIE_CR, TIE_NONCR, target) == pytest.approx(expected, abs=1e-12)


def test_every_python_caller_uses_the_same_definition() -> None:
    from crlib.db.stats import pooled_roc
    from crlib.db.stats import tpr_at_fpr as stats_tpr

    prob, truth = _case(5)
    hist_cr, hist_noncr = score_histograms(prob, truth, np.ones_like(truth))
    curve = roc_from_histograms(hist_cr, hist_noncr)
    fpr, tpr = pooled_roc(hist_cr, hist_noncr)
    for target in (0.0, 1e-5, 0.0005, 0.005, 0.1, 1.0):
        direct = tpr_at_fpr_from_histograms(hist_cr, hist_noncr, target)
        assert tpr_at_fpr(curve, target) == direct == stats_tpr(fpr, tpr, target)
    # the same points, in the other order, give the same numbers
    assert interpolated_tpr(fpr[::-1], tpr[::-1], 0.005) == interpolated_tpr(fpr, tpr, 0.005)


def test_targets_outside_zero_one_and_empty_classes_give_nan() -> None:
    assert np.isnan(tpr_at_fpr_from_histograms(TIE_CR, TIE_NONCR, -0.1))
    assert np.isnan(tpr_at_fpr_from_histograms(TIE_CR, TIE_NONCR, 1.5))
    assert np.isnan(tpr_at_fpr_from_histograms(TIE_CR, TIE_NONCR, float("nan")))
    assert np.isnan(tpr_at_fpr_from_histograms([0, 0], [3, 4], 0.005))
    fpr, tpr = roc_points([1, 2], [0, 0])
    assert np.isnan(fpr).all() and np.isnan(tpr).all()
    with pytest.raises(ValueError, match="one length"):
        roc_points([1, 2], [1, 2, 3])


def _blob_scene(*, truth_blobs: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 CRs far apart on a 200x200 chip; the model gives 0.95 to each centre only."""
    probability = np.full((200, 200), 0.1, dtype=np.float32)
    truth = np.zeros((200, 200), dtype=bool)
    for y in range(10, 200, 25):
        for x in range(10, 200, 40):
            probability[y, x] = 0.95
            if truth_blobs:
                truth[y - 1 : y + 2, x - 1 : x + 2] = True  # the CR's 3x3 footprint
            else:
                truth[y, x] = True  # a CR exactly as large as the model's mask
    probability[5, 5] = probability[190, 195] = 0.6  # two false positives below 0.95
    return probability, truth, np.ones_like(truth)


@pytest.mark.parametrize("truth_blobs", [True, False])
def test_dilation_effect_counts_the_ring_the_dilation_adds(truth_blobs: bool) -> None:
    probability, truth, valid = _blob_scene(truth_blobs=truth_blobs)
    plain = score_histograms(probability, truth, valid)
    dilated = score_histograms(dilated_probability(probability, valid), truth, valid)
    effect = dilation_at_plain_fpr(plain, dilated, 0.0)  # threshold between 0.6 and 0.95
    n_cr, n_noncr = int(truth.sum()), int((~truth).sum())
    assert effect.plain_fpr == 0.0 and effect.plain_tpr == pytest.approx(40 / n_cr)
    if truth_blobs:  # each centre's cross lies inside its CR: 4 CR pixels added per CR, no false one
        assert (effect.added_cr, effect.added_noncr) == (160, 0) and effect.ring_cr_share == 1.0
        assert effect.dilated_tpr == pytest.approx(200 / n_cr) and effect.dilated_fpr == 0.0
    else:  # the cross lands outside every CR: the dilated mask's FPR grows, its TPR does not
        assert (effect.added_cr, effect.added_noncr) == (0, 160) and effect.ring_cr_share == 0.0
        assert effect.dilated_tpr == effect.plain_tpr == 1.0
        assert effect.dilated_fpr == pytest.approx(160 / n_noncr)


def test_dilation_effect_uses_the_one_tpr_definition_and_refuses_mismatched_pixels() -> None:
    rng = np.random.default_rng(4)
    truth = rng.random((300, 300)) < 0.02
    probability = np.clip(truth * 0.7 + rng.random((300, 300)) * 0.5, 0, 1).astype(np.float32)
    valid = rng.random((300, 300)) > 0.05
    plain = score_histograms(probability, truth, valid)
    dilated = score_histograms(dilated_probability(probability, valid), truth, valid)
    for target in (0.0005, 0.005, 0.05):
        effect = dilation_at_plain_fpr(plain, dilated, target)
        assert effect.plain_tpr == pytest.approx(tpr_at_fpr_from_histograms(*plain, target), abs=1e-12)
        assert effect.plain_fpr == pytest.approx(target, abs=1e-12)
        assert effect.added_cr >= 0 and effect.added_noncr >= 0
        assert effect.dilated_tpr >= effect.plain_tpr and effect.dilated_fpr >= effect.plain_fpr
    assert math.isnan(dilation_at_plain_fpr(plain, dilated, 1.5).dilated_tpr)
    other = score_histograms(probability, truth, np.ones_like(valid))
    with pytest.raises(ValueError, match="same CR and non-CR pixels"):
        dilation_at_plain_fpr(plain, other, 0.005)


def test_a_tpr_read_inside_the_float16_top_bin_is_flagged() -> None:
    """Star cores at p = 1.0 tie with the CRs there: below their share the TPR is a tie's, and says so."""
    rng = np.random.default_rng(3)
    shape = (400, 500)  # 200,000 pixels
    truth = rng.random(shape) < 0.01
    prob = np.where(truth, rng.uniform(0.9999, 1.0, shape), rng.uniform(0.0, 0.3, shape)).astype(np.float32)
    cores = np.flatnonzero(~truth.ravel())[:200]  # 200 non-CR pixels the model is sure of
    prob.ravel()[cores] = 0.99995
    hist_cr, hist_noncr = score_histograms(prob, truth, np.ones(shape, bool))
    fpr, _ = roc_points(hist_cr, hist_noncr)

    share = 200 / (~truth).sum()  # ~0.1% of the non-CR pixels: all of them in the top bin, with every CR
    assert top_bin_fpr(fpr) == pytest.approx(share)
    assert fpr_points_inside_top_bin(fpr, [0.0005, 0.005]) == [0.0005]
    # the TPR there is the straight segment through the tie, though the model ranks every CR first
    assert tpr_at_fpr_from_histograms(hist_cr, hist_noncr, 0.0005) == pytest.approx(0.0005 / share)

    prob.ravel()[cores] = 0.2  # no tie: nothing to flag
    fpr, _ = roc_points(*score_histograms(prob, truth, np.ones(shape, bool)))
    assert top_bin_fpr(fpr) == 0.0 and fpr_points_inside_top_bin(fpr, [0.0005, 0.005]) == []
    assert math.isnan(top_bin_fpr(np.array([]))) and fpr_points_inside_top_bin(np.array([]), [0.0005]) == []
