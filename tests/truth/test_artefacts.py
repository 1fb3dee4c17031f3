"""Artefact exclusion (crlib.truth.artefacts) and per-artefact fidelity (crlib.bench.artefact_fidelity)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crlib.bench.artefact_fidelity import artefact_counts, summarise_artefacts
from crlib.profiles import ACS_WFC
from crlib.simulate.artefacts import HOT_PIXEL, SATELLITE
from crlib.simulate.flcfile import write_truth
from crlib.simulate.geometry import ChipWindow
from crlib.truth.artefacts import (
    chord_lengths,
    exclude_artefacts,
    find_satellite_trails,
    recurrent_hot_pixels,
)
from crlib.truth.product import write_truth_product


def _cr_like_mask(rng: np.random.Generator, shape: tuple[int, int], events: int) -> np.ndarray:
    """Clustered flags like CR hits: short random tracks of 3x3 blobs."""
    mask = np.zeros(shape, dtype=bool)
    ny, nx = shape
    for _ in range(events):
        y, x = rng.integers(2, ny - 2), rng.integers(2, nx - 2)
        angle = rng.uniform(0, math.pi)
        for step in range(int(rng.integers(1, 8))):
            yy = int(np.clip(y + step * math.sin(angle), 1, ny - 2))
            xx = int(np.clip(x + step * math.cos(angle), 1, nx - 2))
            mask[yy - 1 : yy + 2, xx - 1 : xx + 2] = True
    return mask


def test_chord_lengths() -> None:
    lengths = chord_lengths((100, 200), np.array([0.0, math.pi / 2]), np.array([50.0, 250.0]))
    assert lengths[0, 0] == pytest.approx(100.0) and lengths[0, 1] == 0.0
    assert lengths[1, 0] == pytest.approx(200.0)


def test_satellite_trail_found_and_cr_fields_left_alone() -> None:
    rng = np.random.default_rng(4)
    shape = (512, 1024)
    crs = _cr_like_mask(rng, shape, 1200)  # ~2 % of the pixels, clustered like CRs
    band, trails = find_satellite_trails(crs)
    assert trails == [] and not band.any()

    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    theta = math.radians(65.0)
    distance = x * math.cos(theta) + y * math.sin(theta) - 400.0
    faint = (np.abs(distance) < 2.5) & (rng.random(shape) < 0.3)  # a faint trail, 30 % flagged
    band, trails = find_satellite_trails(crs | faint)
    assert len(trails) == 1
    assert trails[0].angle_deg == pytest.approx(65.0, abs=0.3)
    assert trails[0].rho_px == pytest.approx(400.0, abs=1.5)
    assert band[faint].all()
    assert band.mean() < 0.03  # a band, not the chip


def test_recurrent_hot_pixels() -> None:
    rng = np.random.default_rng(5)
    shape = (64, 64)
    sigma = np.full(shape, 9.0)
    hot = {(10, 10): 120.0, (30, 40): 60.0, (50, 5): 300.0}
    excess = []
    for _ in range(3):
        frame = rng.normal(0.0, 9.0, shape)
        for (y, x), level in hot.items():
            frame[y, x] += rng.normal(level, math.sqrt(level))
        excess.append(frame)
    excess[1][50, 5] += 900.0  # a CR on a hot pixel in one exposure
    excess[0][20, 20] += 500.0  # a CR alone
    excess[2][40, 50] += 400.0  # two CRs of different charge at one pixel
    excess[1][40, 50] += 900.0
    found = recurrent_hot_pixels(excess, [sigma] * 3, grow_px=0)
    assert found[10, 10] and found[30, 40] and found[50, 5]
    assert not found[20, 20] and not found[40, 50]
    assert found.sum() <= len(hot) + 1  # noise does not pass a 4-sigma mean excess


def test_hot_pixels_are_judged_next_to_flagged_pixels_only() -> None:
    """With ``flagged_any`` the tests run only where a hot pixel or its column trail can be; the
    answer there is the one the tests give on the whole chip."""
    rng = np.random.default_rng(8)
    shape = (96, 80)
    sigma = np.full(shape, 9.0)
    hot = {(10, 10): 120.0, (30, 40): 90.0, (60, 70): 150.0}
    trail = [(31, 40), (32, 40), (33, 40)]  # (30, 40)'s CTE trail down its column, 40 e- each
    excess = []
    for _ in range(3):
        frame = rng.normal(0.0, 9.0, shape)
        for (y, x), level in hot.items():
            frame[y, x] += rng.normal(level, math.sqrt(level))
        for y, x in trail:
            frame[y, x] += rng.normal(40.0, math.sqrt(40.0))
        excess.append(frame)
    flagged = np.zeros(shape, dtype=bool)
    flagged[10, 11] = flagged[29, 40] = True  # driz_cr flagged next to two of the three hot pixels
    found = recurrent_hot_pixels(excess, [sigma] * 3, flagged_any=flagged)
    assert found[10, 10] and found[30, 40] and not found[60, 70]
    assert all(found[y, x] for y, x in trail)  # the trail lies beyond the flagged pixel's 3x3
    near = np.zeros(shape, dtype=bool)
    near[9:12, 9:13] = near[28:31, 39:42] = True  # the 3x3 neighbourhoods of the flagged pixels
    whole_chip = recurrent_hot_pixels(excess, [sigma] * 3, grow_px=0)
    assert whole_chip[60, 70]
    assert np.array_equal(
        recurrent_hot_pixels(excess, [sigma] * 3, grow_px=0, flagged_any=flagged), whole_chip & near
    )


def test_exclude_artefacts_counts() -> None:
    cr = np.zeros((10, 10), dtype=np.uint8)
    cr[2, 2] = cr[5, 5] = cr[8, 8] = 1
    valid = np.ones((10, 10), dtype=np.uint8)
    valid[8, 8] = 0
    hot = np.zeros((10, 10), dtype=bool)
    hot[2, 2] = hot[8, 8] = True
    band = np.zeros((10, 10), dtype=bool)
    band[5, :] = True
    cr_out, valid_out, counts = exclude_artefacts(cr, valid, hot=hot, satellite_band=band)
    assert cr_out.sum() == 0
    assert counts == {"hot_flagged": 1, "hot_excluded": 1, "satellite_flagged": 1, "satellite_excluded": 10}
    assert valid_out.sum() == 100 - 1 - 1 - 10


def test_artefact_fidelity_per_class(tmp_path) -> None:
    shape = (64, 64)
    window = ChipWindow(1, 0, 0, 64, 64)
    true_cr = np.zeros(shape, dtype=np.uint8)
    true_cr[5, 5] = 1
    bits = np.zeros(shape, dtype=np.uint8)
    bits[20, :] = SATELLITE  # 64 trail pixels
    bits[40, 40] = bits[41, 41] = HOT_PIXEL
    write_truth(
        tmp_path / "x_simtruth.fits",
        rootname="x",
        windows=[window],
        cr_masks=[true_cr],
        cr_charges=[true_cr.astype(np.float32) * 500],
        models=[np.full(shape, 50.0, dtype=np.float32)],
        mask_threshold_e=5.0,
        n_events=[1],
        artefacts=[bits],
    )
    ours = true_cr.copy()
    ours[20, 3] = 1  # one trail pixel labelled CR
    ours[40, 40] = 1  # one hot pixel labelled CR ...
    ours[41, 41] = 1
    valid = np.ones(shape, dtype=np.uint8)
    valid[41, 41] = 0  # ... the other one excluded
    write_truth_product(tmp_path / "x_crtruth.fits", rootname="x", masks={1: (ours, valid)}, provenance={})
    counts = artefact_counts(tmp_path / "x_crtruth.fits", tmp_path / "x_simtruth.fits", profile=ACS_WFC)
    summary = summarise_artefacts([counts, counts])
    assert summary["satellite"]["pixels"] == 128
    assert summary["satellite"]["fraction_labelled_cr"] == pytest.approx(1 / 64)
    assert summary["hot_pixel"]["fraction_labelled_cr"] == pytest.approx(0.5)
    assert summary["hot_pixel"]["valid_fraction"] == pytest.approx(0.5)
    assert "sink" not in summary
