"""A simulated visit is real input for tweakwcs and AstroDrizzle, and driz_cr finds the injected CRs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from photutils.detection import DAOStarFinder
from stwcs.wcsutil import HSTWCS
from tweakwcs import FITSWCSCorrector, XYXYMatch, align_wcs


def _catalog(sci: np.ndarray, dq: np.ndarray) -> Table:
    _, median, sigma = sigma_clipped_stats(sci, mask=dq != 0)
    finder = DAOStarFinder(
        fwhm=2.0, threshold=8.0 * sigma, sharpness_range=(0.3, 0.95), roundness_range=(-0.5, 0.5)
    )
    found = finder(sci - median, mask=dq != 0)
    return Table({"x": found["x_centroid"], "y": found["y_centroid"]})


def test_tweakwcs_recovers_the_injected_relative_pointing_errors(gc_visit, read_visit_json) -> None:
    truth = read_visit_json(gc_visit.directory)
    correctors = []
    for k, exposure in enumerate(gc_visit.exposures):
        with fits.open(exposure.path) as hdul:
            for extver in (1, 2):
                catalog = _catalog(hdul["SCI", extver].data.astype(float), hdul["DQ", extver].data)
                meta = {"catalog": catalog, "group_id": k, "name": f"{exposure.rootname}[SCI,{extver}]"}
                correctors.append(FITSWCSCorrector(HSTWCS(hdul, ext=("SCI", extver)), meta=meta))
    align_wcs(correctors, fitgeom="shift", match=XYXYMatch(searchrad=3.0, separation=2.0, tolerance=1.5))
    error0 = np.array(truth["exposures"][0]["pointing_error_px"])
    for corrector in correctors:
        k = corrector.meta["group_id"]
        info = corrector.meta["fit_info"]
        if k == 0:
            continue
        assert info["status"] == "SUCCESS" and info["nmatches"] > 30
        injected = np.array(truth["exposures"][k]["pointing_error_px"]) - error0
        assert -np.asarray(info["shift"]) == pytest.approx(injected, abs=0.05)
        assert info["rmse"] < 0.2  # pixels, centroid noise of faint crowded stars


def test_astrodrizzle_accepts_a_visit_and_driz_cr_recovers_bright_injected_crs(
    ex_visit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drizzlepac import astrodrizzle

    for exposure in ex_visit.exposures:
        shutil.copy(exposure.path, tmp_path)
    monkeypatch.chdir(tmp_path)
    files = [exposure.path.name for exposure in ex_visit.exposures]
    astrodrizzle.AstroDrizzle(
        files,
        output="visit",
        updatewcs=False,
        clean=False,
        build=False,
        context=False,
        preserve=False,
        num_cores=1,
        in_memory=False,
        driz_sep_bits="64,16",
        final_bits="64,16",
    )
    with fits.open("visit_drc_sci.fits") as drizzled:
        assert drizzled[0].header["NDRIZIM"] == 2 * len(files)
    for exposure in ex_visit.exposures:
        with fits.open(exposure.truth_path) as truth_file, fits.open(exposure.path.name) as flc:
            for extver in (1, 2):
                found = fits.getdata(f"{exposure.rootname}_sci{extver}_crmask.fits") == 0
                charge = truth_file["CRCHARGE", extver].data
                dq = flc["DQ", extver].data & ~4096  # driz_cr ORs its own CR bit into the input
                interior = np.zeros(charge.shape, dtype=bool)
                interior[10:-10, 10:-10] = True  # every exposure covers this (dithers are a few pixels)
                bright = (charge > 50.0) & (dq == 0) & interior
                recall = (found & bright).sum() / bright.sum()
                assert bright.sum() > 1000
                assert recall > 0.9
                assert (flc["DQ", extver].data & 4096).astype(bool).sum() > 0.5 * bright.sum()


@pytest.mark.slow
def test_full_size_visit_writes_valid_full_frame_files(tmp_path: Path) -> None:
    from crlib.simulate import simulate_archive

    archive = simulate_archive(
        tmp_path, visits=1, exposures=2, field_type="resolved_galaxy", size="full", seed=5
    )
    visit = archive.visits[0]
    for exposure in visit.exposures:
        with fits.open(exposure.path) as hdul:
            assert hdul[0].header["SUBARRAY"] is False and hdul[0].header["APERTURE"] == "WFC"
            for extver in (1, 2):
                assert hdul["SCI", extver].data.shape == (2048, 4096)
                assert hdul["SCI", extver].header["LTV1"] == hdul["SCI", extver].header["LTV2"] == 0.0
                assert hdul["SCI", extver].header["CRPIX1"] == 2048.0
                assert hdul["SCI", extver].header["NGOODPIX"] > 0.9 * 2048 * 4096
            assert HSTWCS(hdul, ext=("SCI", 1)).calc_footprint().shape == (4, 2)
        assert 0.005 < exposure.cr_pixel_fraction < 0.03
