"""Cropped files keep the real full-chip WCS; dithers in the truth equal what the WCS implies."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from stwcs.wcsutil import HSTWCS

from crlib.profiles import ACS_WFC
from crlib.simulate.geometry import chip_windows, dither_pattern, header_crval_cd
from crlib.simulate.template import load_template


def test_small_crop_maps_pixels_like_the_full_chip(gc_visit) -> None:
    template = load_template(ACS_WFC)
    path = gc_visit.exposures[1].path
    rng = np.random.default_rng(0)
    with fits.open(path) as hdul:
        for extver in (1, 2):
            header = hdul["SCI", extver].header
            assert hdul["SCI", extver].data.shape == (512, 1024)
            x0, y0 = -header["LTV1"], -header["LTV2"]
            crval, cd = header_crval_cd(header)
            full_chip = template.chip_wcs(extver, crval, cd)
            pixels = rng.uniform([0, 0], [1023, 511], size=(200, 2))
            expected = full_chip.all_pix2world(pixels + np.array([x0, y0]), 0)
            for wcs in (WCS(header, fobj=hdul), HSTWCS(hdul, ext=("SCI", extver))):
                assert wcs.det2im1 is not None and wcs.cpdis1 is not None and wcs.sip is not None
                got = wcs.all_pix2world(pixels, 0)
                assert np.abs(got - expected).max() * 3.6e6 < 0.01  # milliarcsec


@pytest.mark.parametrize("size", ["small", "full"])
def test_windows_cover_both_amplifiers_next_to_the_gap(size: str) -> None:
    windows = chip_windows(ACS_WFC, size)
    assert [w.sci_extver for w in windows] == [1, 2]
    for window in windows:
        assert window.x0 < 2048 < window.x0 + window.nx
    sci1, sci2 = windows
    assert sci1.y0 + sci1.ny == 2048 and sci2.y0 == 0


def test_dithers_recorded_in_the_truth_match_the_files_wcs(small_archive, read_visit_json) -> None:
    for visit in small_archive.visits:
        truth = read_visit_json(visit.directory)
        anchor = truth["anchor"]
        extver = anchor["sci_extver"]
        wcs = []
        for exposure in visit.exposures:
            with fits.open(exposure.path) as hdul:
                header = hdul["SCI", extver].header
                wcs.append(HSTWCS(hdul, ext=("SCI", extver)))
                offset = np.array([header["LTV1"], header["LTV2"]])
                assert (hdul[0].header["POSTARG1"], hdul[0].header["POSTARG2"]) == pytest.approx(
                    exposure.dither_arcsec
                )
        anchor_pixel = np.array([[anchor["x"], anchor["y"]]]) + offset
        sky = wcs[0].all_pix2world(anchor_pixel, 0)
        first = np.array(truth["exposures"][0]["dither_px"])
        for k, record in enumerate(truth["exposures"]):
            moved = wcs[k].all_world2pix(sky, 0)[0] - anchor_pixel[0]
            assert moved == pytest.approx(np.array(record["dither_px"]) - first, abs=0.01)
            assert np.array(record["dither_arcsec"]) == pytest.approx(np.array(record["dither_px"]) * 0.05)


@pytest.mark.parametrize("count", range(1, 9))
def test_dither_patterns_have_sub_pixel_phases(count: int) -> None:
    name, offsets = dither_pattern(count)
    assert name.startswith("ACS-WFC-DITHER-")
    assert len(offsets) == count == len(set(offsets))
    if count > 1:
        phases = {(round(x % 1, 2), round(y % 1, 2)) for x, y in offsets}
        assert len(phases) > 1


def test_undithered_visit_keeps_every_exposure_on_one_pixel_grid(tmp_path) -> None:
    """``dither="none"``: CR-SPLIT-like, same commanded pointing, only a few hundredths of a pixel jitter."""
    import json

    from astropy.io import fits

    from crlib.errors import ConfigError
    from crlib.simulate import simulate_visit
    from crlib.simulate.geometry import CR_SPLIT

    assert dither_pattern(3, dither="none") == (CR_SPLIT, [(0.0, 0.0)] * 3)
    visit = simulate_visit(tmp_path, field_type="extragalactic", exposures=3, size="small", dither="none")
    truth = json.loads(visit.truth_json.read_text())
    assert truth["dither_pattern"] == CR_SPLIT
    assert all(e["dither_px"] == [0.0, 0.0] for e in truth["exposures"])
    jitters = np.array([e["jitter_px"] for e in truth["exposures"]])
    assert np.abs(jitters).max() < 0.15  # dithered visits use 0.15 px sigma; CR-SPLIT 0.03
    headers = []
    for exposure in visit.exposures:
        with fits.open(exposure.path) as hdul:
            assert hdul[0].header["POSTARG1"] == 0.0 and hdul[0].header["POSTARG2"] == 0.0
            headers.append((hdul["SCI", 1].header["CRVAL1"], hdul["SCI", 1].header["CRVAL2"]))
    assert len(set(headers)) == 1
    with pytest.raises(ConfigError, match="dither must be one of"):
        simulate_visit(tmp_path / "b", field_type="extragalactic", exposures=3, dither="box")
