"""The mask phase of a visit's truth, from a real in-memory drizzle run of a small simulated visit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from crlib.formats.exposures import copy_to_work_dir, find_exposures, read_exposure_info
from crlib.profiles import ACS_WFC
from crlib.truth import TruthOptions, read_truth_product
from crlib.truth.drizzle_inmemory import run_inmemory_drizzle
from crlib.truth.visit_masks import visit_masks


@pytest.fixture(scope="module")
def drizzled(truth_archive, tmp_path_factory):
    """Working copies, exposure records and the in-memory driz_cr run of the extragalactic visit."""
    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    work_dir = tmp_path_factory.mktemp("masks") / "work"
    copies = copy_to_work_dir(find_exposures(Path(visit.directory)), work_dir)
    infos = [read_exposure_info(copy) for copy in copies]
    return infos, copies, run_inmemory_drizzle(copies, profile=ACS_WFC, output_name="v", processes=1)


def test_an_exposure_with_a_chip_driz_cr_left_unmasked_fails_alone(drizzled, tmp_path):
    infos, copies, run = drizzled
    first = infos[0].rootname
    masks = {key: mask for key, mask in run.masks.items() if key != (first, 2)}
    partial = dataclasses.replace(run, masks=masks)
    results = visit_masks(
        infos,
        copies,
        partial,
        alignment=None,
        options=TruthOptions(workers=2),
        out_dir=tmp_path,
        provenance={"METHOD": "drizzle"},
    )
    by_root = {r.rootname: r for r in results}
    assert sorted(by_root) == sorted(i.rootname for i in infos)
    assert by_root[first].status == "failed"
    assert by_root[first].reasons == ("driz_cr produced no mask for chip(s) [2]",)
    assert not (tmp_path / f"{first}_crtruth.fits").exists()
    for info in infos[1:]:
        record = by_root[info.rootname]
        assert record.status in ("ok", "suspect"), record.reasons
        _, products = read_truth_product(Path(record.path))
        assert sorted(products) == [1, 2]
