"""Stars land where each exposure's true (distortion-corrected) WCS puts them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from photutils.detection import DAOStarFinder
from scipy.spatial import cKDTree
from stwcs.wcsutil import HSTWCS

from crlib.simulate import simulate_visit
from crlib.simulate.effects import SimEffects


def _point_sources(model: np.ndarray, sky: float) -> np.ndarray:
    """Centroids (x, y) of isolated, unsaturated point sources in a noiseless model image."""
    finder = DAOStarFinder(
        fwhm=2.0, threshold=200.0, sharpness_range=(0.5, 1.0), roundness_range=(-0.2, 0.2), peak_max=5e4
    )
    table = finder(model - sky)
    xy = np.column_stack([table["x_centroid"], table["y_centroid"]])
    distance, _ = cKDTree(xy).query(xy, k=2)
    return xy[distance[:, 1] > 8.0]


def test_relative_positions_follow_header_wcs_plus_injected_errors(gc_visit, read_visit_json) -> None:
    truth = read_visit_json(gc_visit.directory)
    sky = truth["sky_e_per_pixel"]
    extver = 2
    wcs, sources = [], []
    for exposure in gc_visit.exposures:
        with fits.open(exposure.path) as hdul, fits.open(exposure.truth_path) as truth_file:
            wcs.append(HSTWCS(hdul, ext=("SCI", extver)))
            sources.append(_point_sources(truth_file["MODEL", extver].data.astype(float), sky))
    error0 = np.array(truth["exposures"][0]["pointing_error_px"])
    for k in range(1, len(sources)):
        predicted = wcs[k].all_world2pix(wcs[0].all_pix2world(sources[0], 0), 0)
        distance, index = cKDTree(sources[k]).query(predicted, distance_upper_bound=2.0)
        found = np.isfinite(distance)
        assert found.sum() > 30
        shift = np.median(sources[k][index[found]] - predicted[found], axis=0)
        expected = np.array(truth["exposures"][k]["pointing_error_px"]) - error0
        assert shift == pytest.approx(expected, abs=0.03)


def test_gaia_stars_land_at_their_catalog_positions(tmp_path, shared_data) -> None:
    catalog = shared_data / "gaia" / "gaia_dr2_ngc6791_wfc3_ibwb01.cat"
    visit = simulate_visit(  # basic: the pointing error is then a pure translation
        tmp_path,
        field_type="extragalactic",
        exposures=2,
        seed=3,
        gaia_catalog=catalog,
        exptime_s=60.0,
        effects=SimEffects.basic(),
    )
    ra, dec = np.loadtxt(catalog, usecols=(0, 1), unpack=True)
    truth = json.loads((visit.directory / "truth" / "visit.json").read_text())
    assert truth["target_name"] == "NGC6791"
    for k, exposure in enumerate(visit.exposures):
        error = np.array(truth["exposures"][k]["pointing_error_px"])
        with fits.open(exposure.path) as hdul, fits.open(exposure.truth_path) as truth_file:
            for extver in (1, 2):
                model = truth_file["MODEL", extver].data.astype(float)
                found = _point_sources(model, truth["sky_e_per_pixel"])
                wcs = HSTWCS(hdul, ext=("SCI", extver))
                sky = np.column_stack([ra, dec])
                header_xy = wcs.all_world2pix(sky, 0, quiet=True)
                converged = np.all(np.abs(wcs.all_pix2world(header_xy, 0) - sky) < 1e-7, axis=1)
                header_xy[~converged] = -1e6  # far outside this chip: no Newton solution
                distance, index = cKDTree(header_xy + error).query(found, distance_upper_bound=1.0)
                matched = np.isfinite(distance)
                assert matched.sum() > 20
                residual = found[matched] - (header_xy + error)[index[matched]]
                assert np.median(residual, axis=0) == pytest.approx([0.0, 0.0], abs=0.03)
                # without the injected error the header WCS is off by it: alignment has work to do
                assert np.linalg.norm(error) > 0.3
