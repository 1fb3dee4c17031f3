"""Alignment of simulated visits: relative fit, absolute fit to a catalog file, clean fallbacks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from astropy.io import fits

from crlib.align import AlignOptions, align_visit
from crlib.align.exposures import copy_to_work_dir, find_exposures
from crlib.profiles import ACS_WFC
from crlib.truth.fidelity import wcs_correction_error

GAIA_FILE = "gaia/gaia_dr2_ngc6791_wfc3_ibwb01.cat"


@pytest.fixture(scope="session")
def gaia_visit(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """A small 3-exposure visit whose stars sit at real Gaia DR2 positions (NGC 6791)."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("gaia-archive")
    archive = simulate_archive(
        root,
        visits=1,
        exposures=3,
        field_type="globular_cluster",
        size="small",
        seed=3,
        gaia_catalog=shared_data / GAIA_FILE,
    )
    return archive.visits[0]


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
    copies = _copies(gaia_visit, tmp_path)
    for copy in copies:
        with fits.open(copy, mode="update") as hdul:
            for extver in (1, 2):
                hdul["SCI", extver].data[:] = 40.0
    result = align_visit(copies, visit="blank", profile=ACS_WFC, options=AlignOptions(query_catalogs=False))
    assert result.status == "not_aligned"
    assert "too few sources" in result.reason
    with fits.open(copies[0]) as hdul:
        assert "FIT" not in hdul["SCI", 1].header["WCSNAME"]  # nothing written
