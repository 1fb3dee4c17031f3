"""One exposure's bad pixels never stop a visit's truth (issue 17).

A visit with exposures damaged the ways real downloads are (a chip of NaN, half NaN, a constant
chip, an empty exposure with no source) goes through the whole drizzle truth stage once: each
damaged exposure is ``failed`` with a one-line reason naming the file, the problem and the fix,
and the good exposures get truth. A visit of blank sky is not aligned and still gets truth.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.align import AlignOptions
from crlib.records import TruthResult
from crlib.truth import TruthOptions, build_visit_truth, read_truth_product

NO_QUERY = TruthOptions(align_options=AlignOptions(query_catalogs=False))

#: exposure index in the damaged visit -> (damage, fragment of the expected reason)
DAMAGES = {
    3: ("all_nan", "SCI,1 is entirely NaN/Inf"),
    4: ("half_nan", "SCI,1 has 50.0% NaN/Inf pixels"),
    5: ("constant", "SCI,2 is constant"),
    6: ("no_source", "no source found on any chip"),
}
#: rows of SCI,1 set to NaN in the exposure that stays usable (0.4% of the chip: flagged, not fatal)
FEW_NAN_ROWS = slice(100, 102)


def sky_and_noise(simtruth: Path, extver: int, shape: tuple[int, ...], rng, *, with_crs: bool) -> np.ndarray:
    """Blank sky: the simulated sky level plus noise (and the exposure's own cosmic rays)."""
    with fits.open(simtruth) as hdul:
        sky = float(np.median(hdul["MODEL", extver].data))
        charge = hdul["CRCHARGE", extver].data if with_crs else 0.0
    noise = rng.normal(0.0, np.sqrt(sky + 4.5**2), shape)
    return (sky + noise + charge).astype(np.float32)


def damage(path: Path, kind: str, simtruth: Path) -> None:
    """Damage one exposure file in place the way ``kind`` says."""
    rng = np.random.default_rng(1)
    with fits.open(path, mode="update") as hdul:
        if kind == "all_nan":
            hdul["SCI", 1].data[:] = np.nan
        elif kind == "half_nan":
            hdul["SCI", 1].data[: hdul["SCI", 1].data.shape[0] // 2] = np.nan
        elif kind == "constant":
            hdul["SCI", 2].data[:] = 0.0
        elif kind == "few_nan":
            hdul["SCI", 1].data[FEW_NAN_ROWS] = np.nan
        elif kind == "no_source":
            for extver in (1, 2):
                sci = hdul["SCI", extver].data
                sci[:] = sky_and_noise(simtruth, extver, sci.shape, rng, with_crs=False)
        else:  # pragma: no cover
            raise ValueError(kind)


@pytest.fixture(scope="module")
def damaged_visit(tmp_path_factory: pytest.TempPathFactory):
    """A 7-exposure sparse visit: 0-2 usable (2 with a few NaN rows), 3-6 damaged; truth run once."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("damaged-archive")
    archive = simulate_archive(root, visits=1, exposures=7, field_type="extragalactic", size="small", seed=4)
    visit = archive.visits[0]
    damage(visit.exposures[2].path, "few_nan", visit.exposures[2].truth_path)
    for index, (kind, _) in DAMAGES.items():
        damage(visit.exposures[index].path, kind, visit.exposures[index].truth_path)
    work = tmp_path_factory.mktemp("damaged-work")
    return visit, build_visit_truth(Path(visit.directory), work_dir=work, options=NO_QUERY)


def _by_root(results: tuple[TruthResult, ...]) -> dict[str, TruthResult]:
    return {r.rootname: r for r in results}


@pytest.mark.parametrize("index", sorted(DAMAGES))
def test_damaged_exposure_fails_with_a_reason_naming_file_problem_and_fix(damaged_visit, index):
    visit, truth = damaged_visit
    exposure = visit.exposures[index]
    result = _by_root(truth.exposures)[exposure.rootname]
    assert result.status == "failed" and result.path is None
    (reason,) = result.reasons
    assert "\n" not in reason
    assert reason.startswith(f"{exposure.path}: ")  # the visit's file, not a working copy
    assert DAMAGES[index][1] in reason
    assert "download it again" in reason or "check the exposure" in reason


def test_the_rest_of_the_damaged_visit_gets_aligned_truth(damaged_visit):
    visit, truth = damaged_visit
    results = _by_root(truth.exposures)
    assert sorted(results) == sorted(e.rootname for e in visit.exposures)
    assert truth.alignment is not None and truth.alignment.status == "aligned_relative"
    assert sorted(truth.alignment.per_exposure) == sorted(e.rootname for e in visit.exposures[:3])
    for exposure in visit.exposures[:3]:
        result = results[exposure.rootname]
        assert result.status in ("ok", "suspect"), result.reasons
        assert result.path is not None and Path(result.path).is_file()
        assert result.parameters["NEXP"] == 3
    # the damaged files were never modified; the NaN rows only in the working copy
    with fits.open(visit.exposures[2].path) as hdul:
        assert np.isnan(hdul["SCI", 1].data[FEW_NAN_ROWS]).all()


def test_a_few_nan_pixels_become_invalid_pixels_not_a_failure(damaged_visit):
    visit, truth = damaged_visit
    exposure = visit.exposures[2]
    result = _by_root(truth.exposures)[exposure.rootname]
    _, masks = read_truth_product(Path(result.path))
    crmask, valid = masks[1]
    assert not valid[FEW_NAN_ROWS].any()
    assert not crmask[FEW_NAN_ROWS].any()
    assert valid.mean() > 0.9
    with fits.open(truth.work_dir / exposure.path.name) as hdul:
        assert np.isfinite(hdul["SCI", 1].data).all()
        assert (hdul["DQ", 1].data[FEW_NAN_ROWS] & 2).all()


def test_damage_leaving_one_exposure_fails_both_with_their_reasons(truth_archive, tmp_path):
    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    target = tmp_path / visit.visit
    target.mkdir()
    for exposure in visit.exposures[:2]:
        shutil.copy(exposure.path, target)
    victim = target / exposure.path.name
    damage(victim, "all_nan", exposure.truth_path)
    result = _by_root(build_visit_truth(target, work_dir=tmp_path / "w", options=NO_QUERY).exposures)
    assert result[exposure.rootname].reasons[0].startswith(f"{victim}: SCI,1 is entirely NaN/Inf")
    survivor = result[visit.exposures[0].rootname]
    assert survivor.status == "failed" and "at least 2" in survivor.reasons[0]


def test_blank_sky_is_not_aligned_and_still_gets_truth_on_the_header_wcs(truth_archive, tmp_path):
    """No star, no galaxy, only sky, noise and cosmic rays in every exposure."""
    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    blank = tmp_path / visit.visit
    blank.mkdir()
    rng = np.random.default_rng(2)
    for exposure in visit.exposures:
        shutil.copy(exposure.path, blank)
        with fits.open(blank / exposure.path.name, mode="update") as hdul:
            for extver in (1, 2):
                sci = hdul["SCI", extver].data
                sci[:] = sky_and_noise(exposure.truth_path, extver, sci.shape, rng, with_crs=True)
    truth = build_visit_truth(blank, work_dir=tmp_path / "w", options=NO_QUERY)
    assert truth.alignment is not None and truth.alignment.status == "not_aligned"
    assert truth.alignment.reason
    for path in sorted((tmp_path / "w").glob("*_flc.fits")):
        with fits.open(path) as hdul:
            assert "FIT" not in hdul["SCI", 1].header["WCSNAME"]  # header WCS kept
    for result in truth.exposures:
        assert result.status in ("ok", "suspect"), result.reasons
        assert result.path is not None
