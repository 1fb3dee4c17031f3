from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.errors import InputDataError
from crlib.metrics.scoring import (
    pooled_tpr_at_fpr,
    read_truth,
    score_chip,
    score_prediction_file,
)
from crlib.model.exposure import predict_exposure


def test_confusion_counts_ignore_invalid_pixels() -> None:
    truth = np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=bool)
    mask = np.array([[1, 0, 1, 0], [0, 1, 1, 1]], dtype=np.uint8)
    valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    prob = mask.astype(np.float32) * 0.9
    scores = score_chip(prob, mask, truth, valid)
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (1, 2, 1, 2)
    assert scores.hist_cr.sum() == 2 and scores.hist_noncr.sum() == 4


def _write_truth(path: Path, chips: dict[int, np.ndarray], *, valid: dict[int, np.ndarray] | None) -> Path:
    hdus: list = [fits.PrimaryHDU()]
    for extver, mask in chips.items():
        hdus.append(fits.ImageHDU(mask.astype(np.uint8), name="CRMASK", ver=extver))
        if valid is not None:
            hdus.append(fits.ImageHDU(valid[extver].astype(np.uint8), name="VALID", ver=extver))
    fits.HDUList(hdus).writeto(path)
    return path


def test_simulated_archive_exposure_scores_well_against_both_truth_formats(
    basic_archive, tmp_path: Path
) -> None:
    # the basic simulator: its CR mask (CRCHARGE >= 5 e-) has no CTE trail pixels, which no
    # detector finds (with every effect on, deepCR's TPR at 0.5 % FPR against it is ~0.4)
    exposure = basic_archive.visits[0].exposures[0]
    result = predict_exposure(Path(exposure.path), out_dir=tmp_path, device="cpu")
    metrics, curves = score_prediction_file(Path(result.path), Path(exposure.truth_path), field_type="x")
    assert metrics.model_name == result.model_name and metrics.field_type == "x"
    assert metrics.tp + metrics.fn > 100
    assert metrics.tpr_at_fpr["0.005"] > 0.5
    assert metrics.tpr_at_fpr_dilated["0.005"] >= metrics.tpr_at_fpr["0.005"] - 0.05
    assert curves["plain"].n_cr == metrics.tp + metrics.fn
    # the same masks in the truth stage's format, with a VALID plane that drops a border
    sim = read_truth(Path(exposure.truth_path))
    valid = {}
    for extver, (crmask, _) in sim.items():
        v = np.zeros(crmask.shape, dtype=bool)
        v[16:-16, 16:-16] = True
        valid[extver] = v
    crtruth = _write_truth(tmp_path / "x_crtruth.fits", {k: m for k, (m, _) in sim.items()}, valid=valid)
    bordered, _ = score_prediction_file(Path(result.path), crtruth)
    n_valid = sum(int(v.sum()) for v in valid.values())
    assert bordered.tp + bordered.fp + bordered.fn + bordered.tn == n_valid
    pooled = pooled_tpr_at_fpr([metrics, bordered])
    assert set(pooled) == {"plain", "dilated"}


def test_truth_that_does_not_match_the_prediction_is_refused(flc_factory_for_metrics, tmp_path: Path) -> None:
    pred = flc_factory_for_metrics
    wrong = _write_truth(
        tmp_path / "w_crtruth.fits", {1: np.zeros((10, 10)), 2: np.zeros((10, 10))}, valid=None
    )
    with pytest.raises(InputDataError, match="shape"):
        score_prediction_file(pred, wrong)
    missing = _write_truth(tmp_path / "m_crtruth.fits", {3: np.zeros((10, 10))}, valid=None)
    with pytest.raises(InputDataError, match="no CRMASK,1"):
        score_prediction_file(pred, missing)
    not_truth = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(not_truth)
    with pytest.raises(InputDataError, match="no CRMASK extension"):
        read_truth(not_truth)


@pytest.fixture
def flc_factory_for_metrics(small_archive, tmp_path: Path) -> Path:
    exposure = small_archive.visits[1].exposures[0]
    return Path(predict_exposure(Path(exposure.path), out_dir=tmp_path / "pred", device="cpu").path)


def _write_prediction(path: Path, chips: dict[int, tuple[np.ndarray, np.ndarray]]) -> Path:
    from crlib.formats.prediction import ChipPrediction, write_prediction

    return write_prediction(
        path,
        [
            ChipPrediction(extver=e, probability=p, mask=(p > 0.5).astype(np.uint8), header={})
            for e, (p, _) in chips.items()
        ],
        primary={"ROOTNAME": "jsub01abq", "CRMODEL": "ACS-WFC", "CRMODVER": "v"},
    )


def test_each_chip_of_any_layout_is_scored_against_its_own_truth(tmp_path: Path) -> None:
    from crlib.metrics.scoring import score_prediction_chips
    from crlib.truth.product import write_truth_product

    rng = np.random.default_rng(0)
    truth = {1: rng.random((512, 512)) < 0.01}  # a one-chip WFC1-512 subarray
    probability = np.where(truth[1], 0.9, 0.1).astype(np.float32)
    probability[0, :10] = 0.9  # ten false positives
    valid = np.ones((512, 512), np.uint8)
    valid[-1] = 0  # the last row is not valid
    prediction = _write_prediction(tmp_path / "jsub01abq_crpred.fits", {1: (probability, truth[1])})
    crtruth = write_truth_product(
        tmp_path / "jsub01abq_crtruth.fits",
        rootname="jsub01abq",
        masks={1: (truth[1].astype(np.uint8), valid)},
        provenance={"METHOD": "test"},
    )
    primary, per_chip = score_prediction_chips(prediction, crtruth)
    assert list(per_chip) == [1] and primary["ROOTNAME"] == "jsub01abq"
    scores = per_chip[1]
    n_cr = int((truth[1] & (valid == 1)).sum())
    assert (scores.tp, scores.fn) == (n_cr, 0)
    assert scores.fp == 10 - int(truth[1][0, :10].sum())
    assert scores.tp + scores.fp + scores.fn + scores.tn == 511 * 512
    metrics, _ = score_prediction_file(prediction, crtruth)
    assert (metrics.tp, metrics.fp) == (scores.tp, scores.fp)


def test_prediction_and_truth_of_different_layouts_are_refused_naming_both(tmp_path: Path) -> None:
    one_chip = _write_prediction(tmp_path / "a_crpred.fits", {1: (np.zeros((512, 512), np.float32), None)})
    two_chips = _write_truth(
        tmp_path / "two_crtruth.fits", {1: np.zeros((512, 512)), 2: np.zeros((512, 512))}, valid=None
    )
    with pytest.raises(InputDataError, match=r"has no CRPROB,2 for truth chip 2 \(prediction chips \[1\]"):
        score_prediction_file(one_chip, two_chips)
    full_frame = _write_truth(tmp_path / "ff_crtruth.fits", {1: np.zeros((2048, 64))}, valid=None)
    with pytest.raises(InputDataError, match=r"CRMASK,1 shape 2048x64 px differs .* chip 1 shape 512x512 px"):
        score_prediction_file(one_chip, full_frame)
    bad_valid = tmp_path / "bv_crtruth.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.zeros((512, 512), np.uint8), name="CRMASK", ver=1),
            fits.ImageHDU(np.ones((8, 8), np.uint8), name="VALID", ver=1),
        ]
    ).writeto(bad_valid)
    with pytest.raises(InputDataError, match="VALID,1 shape 8x8 px differs from CRMASK,1 shape 512x512 px"):
        read_truth(bad_valid)
