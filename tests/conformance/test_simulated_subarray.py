"""A one-chip ACS/WFC subarray: screen -> infer -> score against its truth product -> CR statistics.

Made from a small simulated exposure (two 512x1024 chips) the way a real subarray file looks: the
WFC1 chip only (``SCI,2`` of a full frame, CCDCHIP 1), renumbered ``SCI,1``, ``SUBARRAY=T``. The
simulator injects cosmic rays at the profile's 1.2 events cm^-2 s^-1, so a rate computed over the
real chip area (pixels x (15 um)^2) must come out near that; one computed over the full-frame chip
area would be ~36x (2048x4096 / 512x512) too small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crlib.formats.prediction import read_prediction
from crlib.metrics.crstats import chip_area_cm2, truth_cr_statistics
from crlib.metrics.scoring import score_prediction_chips, score_prediction_file
from crlib.model.exposure import predict_exposure
from crlib.profiles import ACS_WFC
from crlib.screening import screen_file
from crlib.truth.product import write_truth_product

from .conftest import crop_one_chip

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.mark.parametrize(
    ("aperture", "columns", "renumber"),
    [("WFC1-512", slice(256, 768), True), ("WFC1-2K", slice(0, 1024), False)],
    ids=["wfc1-512", "wfc1-sci2-only"],
)
def test_one_chip_subarray_from_screening_to_statistics(
    basic_archive, tmp_path: Path, aperture: str, columns: slice, renumber: bool
) -> None:
    # basic simulator: scored below against its own CR mask, which has no CTE trail pixels
    exposure = basic_archive.visits[0].exposures[0]
    flc, masks = crop_one_chip(
        Path(exposure.path),
        Path(exposure.truth_path),
        tmp_path,
        extver=2,
        renumber=renumber,
        columns=columns,
        aperture=aperture,
    )
    (extver,) = masks
    shape = masks[extver][0].shape
    assert shape == (512, columns.stop - columns.start)

    verdict = screen_file(flc, profile="acs_wfc")
    assert verdict.verdict == "accept", verdict.reasons
    assert verdict.header_summary["n_sci"] == 1 and verdict.header_summary["subarray"] is True

    result = predict_exposure(flc, out_dir=tmp_path / "pred", device="cpu")
    assert result.status == "ok" and result.model_name == "ACS-WFC-F606W"
    primary, chips = read_prediction(Path(result.path))
    assert primary["APERTURE"] == aperture and primary["SUBARRAY"] is True
    assert [(c.extver, c.header["CCDCHIP"], c.probability.shape) for c in chips] == [(extver, 1, shape)]

    truth = write_truth_product(
        tmp_path / f"{exposure.rootname}_crtruth.fits",
        rootname=exposure.rootname,
        masks=masks,
        provenance={"METHOD": "simulated", "APERTURE": aperture},
    )
    _, per_chip = score_prediction_chips(Path(result.path), truth)
    crmask, valid = masks[extver]
    scores = per_chip[extver]
    assert scores.tp + scores.fn == int(np.count_nonzero(crmask & valid))
    assert scores.tp + scores.fp + scores.fn + scores.tn == int(valid.sum())
    metrics, _ = score_prediction_file(Path(result.path), truth)
    assert metrics.tpr_at_fpr["0.005"] > 0.5

    (stats,) = truth_cr_statistics(
        truth, rootname=exposure.rootname, exptime_s=exposure.exptime_s, profile=ACS_WFC
    )
    area = chip_area_cm2(int(valid.sum()), profile=ACS_WFC)
    assert area == pytest.approx(int(valid.sum()) * (15e-4) ** 2)
    assert stats.chip == extver
    assert stats.rate_per_cm2_s == pytest.approx(stats.cr_events / area / exposure.exptime_s)
    # the simulator's rate (events can merge into one connected component: a little lower)
    assert 0.7 * ACS_WFC.cr_rate_per_cm2_s < stats.rate_per_cm2_s < 1.3 * ACS_WFC.cr_rate_per_cm2_s
