"""The in-memory drizzle engine against AstroDrizzle itself, on the same inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.profiles import ACS_WFC
from crlib.truth.drizzle import read_run_record, run_astrodrizzle
from crlib.truth.drizzle_inmemory import run_inmemory_drizzle


def _copies(visit_dir: Path, work: Path, count: int | None = None) -> list[Path]:
    work.mkdir(parents=True)
    paths = sorted(Path(visit_dir).glob("*_flc.fits"))[:count]
    return [Path(shutil.copy(p, work / p.name)) for p in paths]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"driz_cr_grow": 3, "driz_cr_ctegrow": 2, "driz_cr_snr": "3.0 2.5"}],
    ids=["svm", "grow-and-cte-tail"],
)
def test_masks_and_blotted_medians_are_astrodrizzles(truth_archive, tmp_path, overrides):
    visit = next(v for v in truth_archive.visits if v.field_type == "globular_cluster")
    files = _copies(visit.directory, tmp_path / "files")
    memory = _copies(visit.directory, tmp_path / "memory")
    reference = run_astrodrizzle(files, profile=ACS_WFC, output_name="v", overrides=overrides)
    # processes=3: the sky match, single drizzle and blot in forked processes on any machine
    found = run_inmemory_drizzle(memory, profile=ACS_WFC, output_name="v", overrides=overrides, processes=3)

    assert found.engine == "inmemory" and not found.problems and not reference.problems
    keys = {(e.rootname, extver) for e in visit.exposures for extver in (1, 2)}
    assert set(found.masks) == set(found.blots) == set(reference.crmask_files) == keys
    for rootname, extver in keys:
        expected = reference.cr_mask(rootname, extver)
        assert expected is not None and expected.sum() > 100
        assert np.array_equal(found.cr_mask(rootname, extver), expected)
        assert np.array_equal(found.blot(rootname, extver), reference.blot(rootname, extver))
    # the same keywords but memory mode; no mask or blot file written; the record says which engine
    record = read_run_record(tmp_path / "memory", "v")
    assert record["engine"] == "inmemory" and record["parameters"]["in_memory"] is True
    assert {k: v for k, v in record["parameters"].items() if k != "in_memory"} == {
        k: v for k, v in read_run_record(tmp_path / "files", "v")["parameters"].items() if k != "in_memory"
    }
    assert not list((tmp_path / "memory").glob("*_crmask.fits"))
    assert not list((tmp_path / "memory").glob("*_blt.fits"))
    assert not list((tmp_path / "memory").glob("*_single_*.fits"))  # drizzlepac writes these in memory mode


def test_a_visit_drizzlepac_cannot_reject_cosmic_rays_in_is_a_problem_not_a_crash(truth_archive, tmp_path):
    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    pair = _copies(visit.directory, tmp_path / "pair", count=2)
    with fits.open(pair[0], mode="update") as hdul:  # AstroDrizzle drops a file without exposure time
        hdul[0].header["EXPTIME"] = 0.0
    run = run_inmemory_drizzle(pair, profile=ACS_WFC, output_name="v")
    assert not run.masks
    assert len(run.problems) == 2
    assert all("driz_cr wrote no crmask" in p and "driz_cr needs 2 or more" in p for p in run.problems)
    assert not run.has_mask(visit.exposures[0].rootname)


def test_truth_products_name_the_engine(gc_truth):
    _, truth = gc_truth
    for result in truth.exposures:
        with fits.open(result.path) as hdul:
            assert hdul[0].header["DRIZENG"] == "inmemory"


def test_a_failing_drizzlepac_step_is_recorded_and_its_files_are_closed(truth_archive, tmp_path, monkeypatch):
    from drizzlepac import imageObject, sky

    from crlib.align import AlignOptions
    from crlib.truth import TruthOptions, build_visit_truth

    closed: list[str] = []
    original_close = imageObject.baseImageObject.close

    def counting_close(self: imageObject.baseImageObject) -> None:
        closed.append(self._filename)
        original_close(self)

    def broken_sky(*args: object, **kwargs: object) -> None:
        raise RuntimeError("sky statistics exploded")

    monkeypatch.setattr(imageObject.baseImageObject, "close", counting_close)
    monkeypatch.setattr(sky, "subtractSky", broken_sky)
    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    options = TruthOptions(align=False, align_options=AlignOptions(query_catalogs=False))
    truth = build_visit_truth(Path(visit.directory), work_dir=tmp_path / "work", options=options)
    assert {r.status for r in truth.exposures} == {"failed"}
    reason = "drizzlepac (in-memory engine) failed: RuntimeError: sky statistics exploded"
    assert all(reason in result.reasons[0] for result in truth.exposures)
    assert len(closed) == len(visit.exposures)  # every image object drizzlepac opened was closed
