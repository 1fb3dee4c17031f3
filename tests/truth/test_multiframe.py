"""The multi-frame (numina crmasks) method on synthetic stacks and on an undithered visit."""

from __future__ import annotations

import numpy as np
import pytest

from crlib.truth.multiframe import CrMaskOptions, compute_crmasks, write_diagnostic_plots


def _stack(seed: int = 1, n: int = 3, factors=(1.0, 1.0, 1.0)):
    rng = np.random.default_rng(seed)
    model = np.full((160, 160), 50.0)
    model[40:48, 40:48] += 4000.0
    frames, truth = [], []
    for k in range(n):
        frame = rng.poisson(model * factors[k]).astype(float) + rng.normal(0, 4.0, model.shape)
        hit = np.zeros(model.shape, bool)
        ys, xs = rng.integers(0, 160, (2, 60))
        frame[ys, xs] += 300.0
        hit[ys, xs] = True
        frames.append(frame)
        truth.append(hit)
    return frames, truth


def test_finds_injected_hits_with_few_false_positives(tmp_path):
    frames, truth = _stack()
    result = compute_crmasks(frames, CrMaskOptions(dilation=0))
    for mask, hit in zip(result.frame_masks, truth, strict=True):
        assert (mask.astype(bool) & hit).sum() >= 0.97 * hit.sum()
        assert (mask.astype(bool) & ~hit).sum() <= 10
    background = np.ones(result.meancr.shape, bool)
    background[36:52, 36:52] = False
    assert abs(float(np.median(result.meancr[background])) - 50) < 2
    paths = write_diagnostic_plots(result, frames, tmp_path, prefix="t")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_auto_flux_factor_handles_scaled_exposures():
    frames, truth = _stack(factors=(1.0, 1.3, 0.8))
    result = compute_crmasks(frames, CrMaskOptions(flux_factor="auto", dilation=0))
    assert np.allclose(result.flux_factors, (1.0, 1.3, 0.8), rtol=0.05)
    for mask, hit in zip(result.frame_masks, truth, strict=True):
        assert (mask.astype(bool) & hit).sum() >= 0.95 * hit.sum()


def test_needs_three_frames():
    frames, _ = _stack()
    with pytest.raises(ValueError, match="at least 3"):
        compute_crmasks(frames[:2])


def _star_stack(shift_px: float, seed: int = 2):
    """Three frames of one bright Gaussian star; frame 1 is shifted by ``shift_px`` in x."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:120, 0:120].astype(float)
    frames = []
    for k in range(3):
        dx = shift_px if k == 1 else 0.0
        model = 60.0 + 60000.0 * np.exp(-((xx - 60.0 - dx) ** 2 + (yy - 60.0) ** 2) / (2 * 1.0**2))
        frames.append(rng.poisson(model).astype(float) + rng.normal(0, 4.0, model.shape))
    return frames


def test_scaled_noise_keeps_a_jittered_star_out_of_the_mask():
    """CR-SPLIT frames move by a few hundredths of a pixel; the star's flanks must not become CRs."""
    frames = _star_stack(shift_px=0.05)
    plain = compute_crmasks(frames, CrMaskOptions(dilation=0))
    tolerant = compute_crmasks(frames, CrMaskOptions(dilation=0, scale_noise_percent=10.0))
    assert plain.frame_masks[1][55:66, 55:66].sum() >= 5  # the plain method flags the moved star
    assert tolerant.frame_masks[:, 55:66, 55:66].sum() == 0


def test_bright_star_core_is_judged_by_its_own_noise():
    """The boundary scales with the noise above the fitted range: a 60000 e- core is not a CR,
    a 2000 e- hit on it is."""
    frames = _star_stack(shift_px=0.0)
    frames[0][60, 60] += 2000.0
    result = compute_crmasks(frames, CrMaskOptions(dilation=0))
    assert result.frame_masks[0][60, 60]
    assert result.frame_masks[1:, 58:63, 58:63].sum() == 0


def test_grow_snr_recovers_a_hits_faint_edge_pixels():
    """Edge pixels below the one-expected-pixel boundary join a detection when significant."""
    model = np.full((400, 400), 80.0)  # 4000 pixels per diagram bin: the boundary is ~4.4 sigma
    frames = [model.copy() for _ in range(5)]  # noiseless: min = median = 80 everywhere
    frames[2][50, 50] += 2000.0  # the track's core
    plain = compute_crmasks(frames, CrMaskOptions(dilation=0))
    sigma = float(plain.boundaries["frame"].sigma(80.0))
    boundary = float(plain.boundaries["frame"](np.array([80.0]))[0])
    # the excess over the mean of the 4 other frames, whose sigma is sigma * sqrt(1 + 1/4)
    grow_threshold = 3.5 * sigma * np.sqrt(1.25)
    assert boundary > grow_threshold + 0.3 * sigma  # the boundary lies above the grow threshold
    edge = (grow_threshold + boundary) / 2  # between the two: only growing can find it
    frames[2][50, 51] += edge
    frames[2][51, 50] += edge
    frames[2][20, 20] += edge  # the same excess with no detection beside it
    # 3.7 sigma over the others: above 3.5 sigma of the noise model alone, below 3.5 sigma of the
    # difference with the mean of the other 4 frames (3.91 sigma): not grown
    frames[2][49, 50] += 3.7 * sigma
    plain = compute_crmasks(frames, CrMaskOptions(dilation=0))
    grown = compute_crmasks(frames, CrMaskOptions(dilation=0, grow_snr=3.5))
    assert plain.frame_masks[2][50, 50] and not plain.frame_masks[2][50, 51]
    assert grown.frame_masks[2][50, 51] and grown.frame_masks[2][51, 50]
    assert not grown.frame_masks[2][20, 20] and not grown.frame_masks[2][49, 50]
    assert grown.frame_masks.sum() == plain.frame_masks.sum() + 2


def test_a_pixel_hit_in_two_of_three_frames_is_flagged_in_both():
    """With three frames a pixel hit twice lifts the median: the signal-proportional noise term
    must not grow with it (measured on a simulated CR-SPLIT visit: hits of 100-500 e- on a 77 e-
    sky, hit in two frames, went unflagged and recall > 50 e- was 0.966 instead of 0.981)."""
    model = np.full((300, 300), 77.0)
    frames = [model.copy() for _ in range(3)]  # noiseless: sigma = sqrt(4**2 + 77) = 9.6 e-
    frames[0][100, 100] += 60.0  # 6 sigma, below a 20 % term on the raised median (63 e-)
    frames[1][100, 100] += 400.0
    frames[0][200, 200] += 60.0  # the same hit alone
    result = compute_crmasks(frames, CrMaskOptions(dilation=0, scale_noise_percent=20.0, grow_snr=3.5))
    assert result.frame_masks[0][200, 200]
    assert result.frame_masks[0][100, 100] and result.frame_masks[1][100, 100]
    assert not result.frame_masks[2].any()
    assert result.mediancr_mask[100, 100]  # the median itself is hit: the minimum replaces it
    assert result.mediancr[100, 100] == pytest.approx(77.0)
