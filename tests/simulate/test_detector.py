"""Noise follows the header's per-amplifier gain and read noise; defects and saturation are flagged."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from crlib.profiles import ACS_WFC
from crlib.simulate.detector import (
    DQ_HOT_PIXEL,
    DQ_SATURATED,
    FULL_WELL_E,
    Defects,
    amplifier_columns,
    bleed_saturation,
    read_out_detailed,
)
from crlib.simulate.geometry import ChipWindow


def _header_amp_values(primary: fits.Header, extver: int) -> tuple[tuple[float, float], tuple[float, float]]:
    amps = ACS_WFC.chip(extver).amps
    return (
        tuple(float(primary[f"ATODGN{a}"]) for a in amps),  # type: ignore[return-value]
        tuple(float(primary[f"READNSE{a}"]) for a in amps),
    )


def _no_defects(shape: tuple[int, int]) -> Defects:
    empty = np.array([], dtype=np.int64)
    return Defects(empty, empty, np.array([]), np.zeros(shape, dtype=bool), np.zeros(shape))


def test_read_noise_and_gain_per_amplifier_match_the_header() -> None:
    primary = fits.getheader(ACS_WFC.template_path(), 0)
    window = ChipWindow(sci_extver=2, x0=1024, y0=0, nx=2048, ny=400)
    gains, noises = _header_amp_values(primary, 2)
    defects = _no_defects(window.shape)
    sci = read_out_detailed(
        np.random.default_rng(1),
        np.zeros(window.shape),
        cr_charge=np.zeros(window.shape),
        defects=defects,
        amp_index=amplifier_columns(ACS_WFC, window),
        gains=gains,
        read_noises=noises,
        exptime_s=100.0,
        dark_e=0.0,
    ).sci
    for half, gain, noise in (
        (slice(0, 1024), gains[0], noises[0]),
        (slice(1024, 2048), gains[1], noises[1]),
    ):
        values = sci[:, half]
        assert values.var() == pytest.approx(noise**2 + gain**2 / 12.0, rel=0.02)
        steps = np.unique(np.round(values / gain, 3))
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # digitised in units of the gain
    assert gains[0] != gains[1] and noises[0] != noises[1]


def test_sky_and_noise_in_source_free_regions_match_the_header(ex_visit, read_visit_json) -> None:
    truth = read_visit_json(ex_visit.directory)
    exposure = ex_visit.exposures[0]
    with fits.open(exposure.path) as hdul, fits.open(exposure.truth_path) as truth_file:
        primary = hdul[0].header
        for extver in (1, 2):
            sci = hdul["SCI", extver].data.astype(float)
            dq = hdul["DQ", extver].data
            model = truth_file["MODEL", extver].data.astype(float)
            charge = truth_file["CRCHARGE", extver].data
            sky = truth["sky_e_per_pixel"]
            blank = (model < sky + 0.5) & (charge == 0) & (dq == 0)
            window = ChipWindow(
                extver, -int(hdul["SCI", extver].header["LTV1"]), 0, sci.shape[1], sci.shape[0]
            )
            amp = amplifier_columns(ACS_WFC, window)
            gains, noises = _header_amp_values(primary, extver)
            dark = hdul["SCI", extver].header["MEANDARK"]
            for side in (0, 1):
                region = blank & (amp[None, :] == side)
                assert region.sum() > 50_000
                assert np.median(sci[region]) == pytest.approx(sky, abs=1.5)
                expected_var = model[region].mean() + dark + noises[side] ** 2 + gains[side] ** 2 / 12.0
                assert sci[region].var() == pytest.approx(expected_var, rel=0.05)


def test_saturated_cores_bleed_along_columns_conserving_charge_and_are_flagged() -> None:
    image = np.full((200, 50), 100.0)
    image[100, 25] = 20 * FULL_WELL_E
    total = image.sum()
    saturated = bleed_saturation(image, FULL_WELL_E)
    assert image.sum() == pytest.approx(total)
    assert image.max() <= FULL_WELL_E
    assert saturated[:, 25].sum() >= 19 and saturated[:, 24].sum() == 0
    defects = _no_defects((200, 50))
    expected = np.full((200, 50), 100.0)
    expected[100, 25] = 20 * FULL_WELL_E
    dq = read_out_detailed(
        np.random.default_rng(2),
        expected,
        cr_charge=np.zeros(expected.shape),
        defects=defects,
        amp_index=np.zeros(50, dtype=np.int64),
        gains=(2.0, 2.0),
        read_noises=(4.0, 4.0),
        exptime_s=100.0,
        dark_e=0.0,
    ).dq
    assert (dq[:, 25] & DQ_SATURATED).astype(bool).sum() >= 19


def test_archive_flags_saturated_stars_and_a_fixed_hot_pixel_pattern(gc_visit) -> None:
    hot_positions = []
    for exposure in gc_visit.exposures:
        with fits.open(exposure.path) as hdul, fits.open(exposure.truth_path) as truth_file:
            dq = hdul["DQ", 1].data
            sci = hdul["SCI", 1].data
            model = truth_file["MODEL", 1].data
            hot = (dq & DQ_HOT_PIXEL) > 0
            hot_positions.append(np.flatnonzero(hot))
            assert np.median(sci[hot] - model[hot]) > 10.0  # residual hot-pixel signal
            saturated = (dq & DQ_SATURATED) > 0
            assert saturated.any()
            assert np.all(model[saturated & ((dq & ~DQ_SATURATED) == 0)] > 0)
            assert hdul["SCI", 1].header["NGOODPIX"] == int((dq == 0).sum())
    for positions in hot_positions[1:]:
        np.testing.assert_array_equal(positions, hot_positions[0])
