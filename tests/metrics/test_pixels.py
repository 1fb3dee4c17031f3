"""Which pixels count in a score: the profile's border and DQ rules, applied and recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.errors import InputDataError
from crlib.metrics.pixels import fits_border, scored_pixels
from crlib.metrics.scoring import score_prediction_chips, score_prediction_file
from crlib.profiles import ACS_WFC, NO_SCORING_RULES, WFC3_UVIS, ScoringRules

from .test_scoring import _write_prediction, _write_truth


def test_the_profiles_carry_the_papers_rules() -> None:
    for profile in (ACS_WFC, WFC3_UVIS):
        assert (profile.scoring.border_px, profile.scoring.exclude_dq) == (128, True)
        assert profile.scoring.label_dq_bits == 4096 | 8192
    assert ACS_WFC.scoring.describe() == "border 128 px, DQ-flagged pixels excluded"
    assert (NO_SCORING_RULES.border_px, NO_SCORING_RULES.exclude_dq) == (0, False)
    with pytest.raises(ValueError, match="border_px"):
        ScoringRules(border_px=-1)


def test_border_and_dq_narrow_the_truths_valid_mask() -> None:
    valid = np.ones((10, 12), np.uint8)
    valid[5, 5] = 0
    dq = np.zeros((10, 12), np.int16)
    dq[4, 4] = 16  # a hot pixel: excluded
    dq[4, 6] = 4096  # a CR flag: the label, kept
    dq[0, 0] = 16  # in the border anyway
    rules = ScoringRules(border_px=2, exclude_dq=True)
    scored = scored_pixels(valid, rules=rules, dq=dq)
    expected = np.zeros((10, 12), bool)
    expected[2:-2, 2:-2] = True
    expected[5, 5] = expected[4, 4] = False
    np.testing.assert_array_equal(scored, expected)
    assert scored_pixels(valid, rules=ScoringRules(border_px=2, exclude_dq=False), dq=dq)[4, 4]
    np.testing.assert_array_equal(scored_pixels(valid, rules=NO_SCORING_RULES), valid.astype(bool))
    assert fits_border((513, 512), 128) and not fits_border((256, 4096), 128)
    with pytest.raises(ValueError, match="DQ shape"):
        scored_pixels(valid, rules=rules, dq=np.zeros((3, 3)))


def _write_flc(path: Path, dq: dict[int, np.ndarray | None]) -> Path:
    hdus: list = [fits.PrimaryHDU()]
    for extver, flags in dq.items():
        shape = flags.shape if flags is not None else (300, 300)
        hdus.append(fits.ImageHDU(np.zeros(shape, np.float32), name="SCI", ver=extver))
        if flags is not None:
            hdus.append(fits.ImageHDU(flags, name="DQ", ver=extver))
    fits.HDUList(hdus).writeto(path)
    return path


def test_scoring_applies_and_records_the_rules(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((300, 300)) < 0.02
    probability = np.clip(truth * 0.8 + rng.normal(0.1, 0.1, truth.shape), 0, 1).astype(np.float32)
    prediction = _write_prediction(tmp_path / "jsub01abq_crpred.fits", {1: (probability, truth)})
    crtruth = _write_truth(tmp_path / "t_crtruth.fits", {1: truth}, valid=None)
    dq = np.zeros((300, 300), np.int16)
    dq[150, 100:140] = 64  # a warm column segment inside the border
    flc = _write_flc(tmp_path / "jsub01abq_flc.fits", {1: dq})

    plain, _ = score_prediction_file(prediction, crtruth)
    assert (plain.border_px, plain.dq_excluded) == (0, False)
    assert plain.tp + plain.fp + plain.fn + plain.tn == 300 * 300

    rules = ScoringRules(border_px=20)
    paper, _ = score_prediction_file(prediction, crtruth, rules=rules, flc=flc)
    assert (paper.border_px, paper.dq_excluded) == (20, True)
    assert paper.tp + paper.fp + paper.fn + paper.tn == 260 * 260 - 40
    inside = truth[20:-20, 20:-20].copy()
    inside[130, 80:120] = False
    assert paper.tp + paper.fn == int(inside.sum())
    no_dq, _ = score_prediction_file(prediction, crtruth, rules=ScoringRules(border_px=20, exclude_dq=False))
    assert no_dq.tp + no_dq.fp + no_dq.fn + no_dq.tn == 260 * 260 and not no_dq.dq_excluded
    with pytest.raises(ValueError, match="pass the exposure's FLC"):
        score_prediction_file(prediction, crtruth, rules=rules)


def test_chips_too_small_for_the_border_are_left_out(tmp_path: Path) -> None:
    big, small = np.zeros((300, 300), bool), np.zeros((200, 300), bool)
    big[150, 150] = small[100, 100] = True
    chips = {1: (big.astype(np.float32), big), 2: (small.astype(np.float32), small)}
    prediction = _write_prediction(tmp_path / "jsub01abq_crpred.fits", chips)
    crtruth = _write_truth(tmp_path / "t_crtruth.fits", {1: big, 2: small}, valid=None)
    flc = _write_flc(tmp_path / "f_flc.fits", {1: None, 2: None})  # no DQ arrays: nothing flagged
    _, scores = score_prediction_chips(prediction, crtruth, rules=ScoringRules(border_px=100), flc=flc)
    assert list(scores) == [1] and scores[1].tp + scores[1].fp + scores[1].fn + scores[1].tn == 100 * 100
    with pytest.raises(InputDataError, match="no chip is larger than twice the 150-px scoring border"):
        score_prediction_file(prediction, crtruth, rules=ScoringRules(border_px=150), flc=flc)
    with pytest.raises(InputDataError, match="FLC not found"):
        score_prediction_file(
            prediction, crtruth, rules=ScoringRules(border_px=1), flc=tmp_path / "none.fits"
        )
