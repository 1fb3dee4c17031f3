"""Bad pixels become InputDataError naming file and chip; bad fits are refused (issues 17 and 13).

Small synthetic arrays and catalogs only: the end-to-end visits live in ``test_visit.py`` and
``tests/truth/test_damaged.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from crlib.align.catalogs import SourceFindingError, find_sources
from crlib.align.fit import ChipCorrector, FitOutcome
from crlib.align.verify import FitLimits, header_error_px, verify_relative_fit
from crlib.align.visit import _read_wcs
from crlib.align.visit_sources import exposure_catalogs, visit_catalogs
from crlib.errors import InputDataError
from crlib.formats.exposures import check_chip_pixels, read_exposure_info
from crlib.profiles import ACS_WFC
from crlib.records import AlignmentResult


def _noise(shape=(128, 256), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(60.0, 9.0, shape).astype(np.float32)


def _write_flc(path: Path, sci: np.ndarray, dq: np.ndarray) -> Path:
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(sci, name="SCI", ver=1),
        fits.ImageHDU(dq.astype(np.int16), name="DQ", ver=1),
    ]
    fits.HDUList(hdus).writeto(path)
    return path


def _all_nan(sci, dq):
    sci[:] = np.nan


def _half_nan(sci, dq):
    sci[: sci.shape[0] // 2] = np.nan


def _constant(sci, dq):
    sci[:] = 0.0


def _all_flagged(sci, dq):
    dq[:] = 4


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_all_nan, "SCI,1 is entirely NaN/Inf"),
        (_half_nan, "SCI,1 has 50.0% NaN/Inf pixels (more than 1%)"),
        (_constant, "SCI,1 is constant (every good pixel 0)"),
        (_all_flagged, "SCI,1 has no finite DQ-good pixel"),
    ],
)
def test_unusable_chip_is_refused_naming_file_chip_and_fix(damage, fragment):
    sci, dq = _noise(), np.zeros((128, 256), np.int16)
    damage(sci, dq)
    with pytest.raises(InputDataError) as caught:
        check_chip_pixels(Path("/data/j1_flc.fits"), 1, sci, dq)
    message = str(caught.value)
    assert message.startswith("/data/j1_flc.fits: ") and fragment in message
    assert "download it again" in message and "\n" not in message


def test_a_few_nan_pixels_pass_the_check_and_are_counted(gaia_visit, tmp_path):
    sci = _noise()
    sci[5, :100] = np.nan  # 0.3% of the chip
    check_chip_pixels(Path("x.fits"), 1, sci, np.zeros(sci.shape, np.int16))
    source = Path(gaia_visit.exposures[0].path)
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    with fits.open(copy, mode="update") as hdul:
        hdul["SCI", 2].data[7, :50] = np.inf
    assert read_exposure_info(copy).nonfinite_pixels == 50


def test_photutils_refusing_the_pixels_becomes_input_data_error(tmp_path):
    sci, dq = _noise(), np.zeros((128, 256), np.int16)
    dq[:, ::2] = 4  # every background box is half masked: photutils refuses them all
    with pytest.raises(SourceFindingError, match="background"):
        find_sources(sci, dq, fwhm_px=2.6, saturation_e=80000.0)
    path = _write_flc(tmp_path / "j2_flc.fits", sci, dq)
    with pytest.raises(InputDataError) as caught:
        exposure_catalogs(path, profile=ACS_WFC)
    assert str(caught.value).startswith(f"{path}: SCI,1: background estimate impossible")
    result = visit_catalogs([path], profile=ACS_WFC)
    assert not result.catalogs and str(result.failures[path]) == str(caught.value)


def test_a_bug_in_our_code_is_not_swallowed(tmp_path, monkeypatch):
    path = _write_flc(tmp_path / "j3_flc.fits", _noise(), np.zeros((128, 256), np.int16))

    def broken(*args, **kwargs):
        raise TypeError("a bug, not bad data")

    monkeypatch.setattr("crlib.align.catalogs.find_sources", broken)
    with pytest.raises(TypeError, match="a bug"):
        visit_catalogs([path], profile=ACS_WFC)


# ------------------------------------------------------------------ refusing bad relative fits
@pytest.fixture(scope="module")
def chip_wcs(gaia_visit):
    """A real (distorted) HSTWCS of one simulated chip."""
    return _read_wcs(Path(gaia_visit.exposures[0].path), [1])[1]


def _pair_of_exposures(chip_wcs, offset_px: float, n: int = 60, seed: int = 1):
    """Reference ``r`` and exposure ``k`` seeing the same stars, ``k``'s header off by ``offset_px`` in x."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(20, 1000, n), rng.uniform(20, 490, n)
    ref = ChipCorrector(Path("r.fits"), "r", 1, Table({"x": x, "y": y}))
    noise = rng.normal(0.0, 0.05, (2, n))
    exp = ChipCorrector(Path("k.fits"), "k", 1, Table({"x": x + offset_px + noise[0], "y": y + noise[1]}))
    header = {("r", 1): chip_wcs, ("k", 1): chip_wcs}
    return [ref, exp], header


def _moved(chip_wcs, dx: float):
    moved = chip_wcs.deepcopy()
    moved.wcs.crpix[0] += dx
    moved.wcs.set()
    return moved


def _outcome(fitted, *, shift=(0.0, 0.0), rms=0.1) -> FitOutcome:
    per_exposure = {"r": {"reference": 1.0}, "k": {"shift_x": shift[0], "shift_y": shift[1], "rms_px": rms}}
    return FitOutcome(True, "shift", 40, rms, {("k", 1): fitted}, per_exposure)


def _verify(outcome, chips, header):
    return verify_relative_fit(
        outcome, chips, header, searchrad_px=25.0, tolerance_px=2.0, scale_arcsec=0.05, limits=FitLimits()
    )


def test_fit_that_undoes_the_header_error_is_kept(chip_wcs):
    chips, header = _pair_of_exposures(chip_wcs, offset_px=1.0)
    refused, comparisons = _verify(_outcome(_moved(chip_wcs, 1.0), shift=(1.0, 0.0)), chips, header)
    assert refused == {}
    assert comparisons["k"].n_pairs == 60
    assert comparisons["k"].fit_offset_px < 0.05 < 0.95 < comparisons["k"].header_offset_px < 1.05
    assert comparisons["k"].fit_rms_px < 0.1 < 0.9 < comparisons["k"].header_rms_px


def test_fit_worse_than_the_header_on_the_header_pairs_is_refused(chip_wcs):
    chips, header = _pair_of_exposures(chip_wcs, offset_px=0.2)
    refused, comparisons = _verify(_outcome(_moved(chip_wcs, 1.5), shift=(1.5, 0.0)), chips, header)
    assert refused["k"].startswith("on the 60 source pairs its header WCS lines up within 2 px")
    note = {
        "header_kept": 1.0,
        "header_pairs": 60.0,
        "header_chance_pairs": comparisons["k"].n_chance,
        "header_offset_px": comparisons["k"].header_offset_px,
    }
    alignment = AlignmentResult("v", "not_aligned", None, None, 0, None, None, per_exposure={"k": note})
    assert math.isclose(header_error_px(alignment), 0.2, abs_tol=0.05)
    unmeasured = AlignmentResult(
        "v", "not_aligned", None, None, 0, None, None, per_exposure={"k": {"header_kept": 1.0}}
    )
    assert header_error_px(unmeasured) == math.inf


@pytest.mark.parametrize(
    ("shift", "rms", "fragment"),
    [
        ((30.0, 0.0), 0.1, "shift 30.0 px > search radius 25 px"),
        ((0.0, 0.0), 3.5, "fit rms 3.50 px > 3.0 px"),
    ],
)
def test_fit_beyond_the_search_radius_or_rms_limit_is_refused(chip_wcs, shift, rms, fragment):
    chips, header = _pair_of_exposures(chip_wcs, offset_px=0.0)
    refused, _ = _verify(_outcome(chip_wcs, shift=shift, rms=rms), chips, header)
    assert fragment in refused["k"]


def test_chance_pairs_do_not_judge_a_fit(chip_wcs):
    """Header off by 10 px: the few pairs within 2 px are chance, the header comparison abstains."""
    chips, header = _pair_of_exposures(chip_wcs, offset_px=10.0, n=200)
    refused, comparisons = _verify(_outcome(_moved(chip_wcs, 10.0), shift=(10.0, 0.0)), chips, header)
    assert refused == {}
    assert comparisons["k"].n_pairs < max(3, 3 * comparisons["k"].n_chance)
