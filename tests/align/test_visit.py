"""Alignment of simulated visits: relative fit, absolute fit to a catalog file, clean fallbacks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from crlib.align import AlignOptions, align_visit
from crlib.bench.truth_scoring import wcs_correction_error
from crlib.formats.exposures import copy_to_work_dir, find_exposures
from crlib.profiles import ACS_WFC

GAIA_FILE = "gaia/gaia_dr2_ngc6791_wfc3_ibwb01.cat"


def _copies(visit, tmp_path: Path) -> list[Path]:
    return copy_to_work_dir(find_exposures(Path(visit.directory)), tmp_path / "work")


def test_absolute_fit_to_catalog_file_recovers_the_pointing_error(gaia_visit, tmp_path, shared_data):
    copies = _copies(gaia_visit, tmp_path)
    options = AlignOptions(catalog_file=shared_data / GAIA_FILE)
    result = align_visit(copies, visit=gaia_visit.visit, profile=ACS_WFC, options=options)
    assert result.status == "aligned_absolute", result.reason
    assert result.catalog == "GAIADR2"
    assert result.wcsname.endswith("-FIT_SVM_GAIADR2")
    info = json.loads((Path(gaia_visit.directory) / "truth" / "visit.json").read_text())
    for entry in info["exposures"]:
        copy = next(c for c in copies if c.name.startswith(entry["rootname"]))
        shift = tuple(entry["pointing_error_px"])
        original = Path(gaia_visit.directory) / copy.name
        assert wcs_correction_error(original, copy, {1: shift, 2: shift}) < 0.1
        with fits.open(copy) as hdul:
            assert hdul["SCI", 1].header["WCSNAME"] == result.wcsname


def test_unreachable_catalog_service_keeps_the_relative_fit_quickly(gaia_visit, tmp_path):
    copies = _copies(gaia_visit, tmp_path)
    options = AlignOptions(vizier_server="127.0.0.1:9", timeout_s=2.0)
    start = time.perf_counter()
    result = align_visit(copies, visit=gaia_visit.visit, profile=ACS_WFC, options=options)
    assert time.perf_counter() - start < 60
    assert result.status == "aligned_relative"
    assert result.catalog is None
    assert all(name in result.reason for name in ("GAIADR3", "GSC242", "2MASS"))
    assert result.fit_geometry == "rscale" and result.n_matches >= 6
    assert result.rms_px is not None and result.rms_px < 0.5


def test_blank_visit_is_not_aligned_with_a_reason(gaia_visit, tmp_path):
    """Sky, noise and cosmic rays only: the CR hits that pass the catalog's shape cuts never match."""
    copies = _copies(gaia_visit, tmp_path)
    rng = np.random.default_rng(3)
    for copy, exposure in zip(copies, gaia_visit.exposures, strict=True):
        with fits.open(copy, mode="update") as hdul, fits.open(exposure.truth_path) as truth:
            for extver in (1, 2):
                sci = hdul["SCI", extver].data
                noise = rng.normal(60.0, 9.0, sci.shape)
                sci[:] = (noise + truth["CRCHARGE", extver].data).astype(np.float32)
    result = align_visit(copies, visit="blank", profile=ACS_WFC, options=AlignOptions(query_catalogs=False))
    assert result.status == "not_aligned"
    assert "relative fit failed" in result.reason or "too few sources" in result.reason
    with fits.open(copies[0]) as hdul:
        assert "FIT" not in hdul["SCI", 1].header["WCSNAME"]  # nothing written


def test_exposure_with_a_nan_chip_is_left_out_and_the_rest_aligned(gaia_visit, tmp_path):
    copies = _copies(gaia_visit, tmp_path)
    with fits.open(copies[1], mode="update") as hdul:
        hdul["SCI", 1].data[:] = np.nan
    result = align_visit(copies, visit="nan", profile=ACS_WFC, options=AlignOptions(query_catalogs=False))
    assert result.status == "aligned_relative", result.reason
    assert f"left out {copies[1]}: SCI,1 is entirely NaN/Inf" in result.reason
    assert sorted(result.per_exposure) == sorted(c.name.split("_")[0] for c in (copies[0], copies[2]))
    with fits.open(copies[1]) as hdul:
        assert "FIT" not in hdul["SCI", 2].header["WCSNAME"]  # left on its header WCS
    with fits.open(copies[2]) as hdul:
        assert hdul["SCI", 2].header["WCSNAME"] == result.wcsname


def test_a_failed_wide_search_is_retried_around_a_header_wcs_that_lines_up(gaia_visit, tmp_path):
    """The wide search finds too few matches (here: a 0.02 px tolerance); the header WCS pairs the
    sources well beyond chance, so matching is tried again within 3 px of it, and succeeds."""
    from crlib.align.fit import MatchOptions

    copies = _copies(gaia_visit, tmp_path)
    options = AlignOptions(query_catalogs=False, relative_match=MatchOptions(searchrad=60.0, tolerance=0.02))
    result = align_visit(copies, visit=gaia_visit.visit, profile=ACS_WFC, options=options)
    assert result.status == "aligned_relative", result.reason
    assert (
        result.reason.startswith("wide search failed (")
        and "matched within 3 px of the header WCS" in result.reason
    )
    assert result.rms_px is not None and result.rms_px < 0.5 and result.n_matches >= 12
    with fits.open(copies[1]) as hdul:
        assert hdul["SCI", 1].header["WCSNAME"].endswith("FIT_REL_NONE")
    # without the retry the visit keeps its header WCS, and says how well it lines up
    no_retry = AlignOptions(
        query_catalogs=False,
        relative_match=MatchOptions(searchrad=60.0, tolerance=0.02),
        header_match=MatchOptions(searchrad=60.0, tolerance=0.02),
    )
    kept = align_visit(
        _copies(gaia_visit, tmp_path / "again"), visit="kept", profile=ACS_WFC, options=no_retry
    )
    assert kept.status == "not_aligned" and kept.reason.endswith("header WCS kept"), kept.reason
    notes = [v for v in kept.per_exposure.values() if v.get("header_kept")]
    assert len(notes) == 2 and all(v["header_pairs"] == 0 or v["header_offset_px"] < 2 for v in notes)
