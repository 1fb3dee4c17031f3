from __future__ import annotations

import numpy as np
from skimage.morphology import dilation, disk

from crlib.metrics.histograms import N_SCORE_BINS, SCORE_THRESHOLDS, dilated_probability, score_histograms


def _random_case(seed: int, shape=(120, 150)):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape) < 0.03
    logits = rng.normal(-6, 3, shape) + truth * rng.normal(9, 3, shape)
    prob = (1 / (1 + np.exp(-logits))).astype(np.float32)
    valid = rng.random(shape) > 0.05
    return prob, truth, valid


def test_counts_above_every_threshold_match_direct_counting() -> None:
    prob, truth, valid = _random_case(0)
    hist_cr, hist_noncr = score_histograms(prob, truth, valid)
    assert hist_cr.size == hist_noncr.size == N_SCORE_BINS
    assert hist_cr.sum() == np.count_nonzero(truth & valid)
    assert hist_noncr.sum() == np.count_nonzero(~truth & valid)
    p16 = prob.astype(np.float16).astype(np.float64)
    for k in range(0, SCORE_THRESHOLDS.size, 97):
        t = SCORE_THRESHOLDS[k]
        assert hist_cr[k + 1 :].sum() == np.count_nonzero((p16 > t) & truth & valid)
        assert hist_noncr[k + 1 :].sum() == np.count_nonzero((p16 > t) & ~truth & valid)


def test_histograms_of_two_exposures_add_up_to_their_pooled_histogram() -> None:
    a = _random_case(1)
    b = _random_case(2)
    pooled = score_histograms(*(np.concatenate([x, y]) for x, y in zip(a, b, strict=True)))
    ha, hb = score_histograms(*a), score_histograms(*b)
    assert np.array_equal(pooled[0], ha[0] + hb[0])
    assert np.array_equal(pooled[1], ha[1] + hb[1])


def test_bins_resolve_fpr_of_1e5_on_a_full_chip() -> None:
    assert 0.5 in SCORE_THRESHOLDS
    assert np.all(np.diff(SCORE_THRESHOLDS) > 0)
    logit = np.log(SCORE_THRESHOLDS / (1 - SCORE_THRESHOLDS))
    t16 = SCORE_THRESHOLDS.astype(np.float16)
    one_up = np.nextafter(t16[:-1], np.float16(1))
    next_f16 = np.nextafter(one_up, np.float16(1)).astype(np.float64)
    # each gap is ~0.01 in logit, or at most two float16 steps (the resolution of stored probabilities)
    fine = (np.diff(logit) <= 0.015) | (SCORE_THRESHOLDS[1:] <= next_f16)
    region = SCORE_THRESHOLDS[1:] > 1e-4
    assert fine[region].all()


def test_thresholding_the_dilated_probability_equals_deepcrs_dilated_mask() -> None:
    prob, _, valid = _random_case(3)
    dilated = dilated_probability(prob, valid)
    for t in (0.1, 0.5, 0.9):
        deepcr_way = dilation((prob > t) * valid, disk(1)).astype(bool)
        assert np.array_equal(dilated > t, deepcr_way)
