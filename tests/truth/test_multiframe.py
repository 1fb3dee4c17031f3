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
