from __future__ import annotations

import numpy as np
import pytest

from crlib.errors import InputDataError
from crlib.metrics.histograms import score_histograms
from crlib.metrics.roc import roc_from_histograms, tpr_at_fpr
from crlib.model.exposure import read_exposure
from crlib.model.lacosmic import (
    OBJLIM_BY_FIELD,
    chip_read_noise,
    lacosmic_mask,
    lacosmic_score,
    sweep_threshold,
)
from crlib.profiles import ACS_WFC

from .conftest import synthetic_chip


def test_read_noise_comes_from_the_chip_amplifiers(flc_factory) -> None:
    flc, _ = flc_factory()
    exposure = read_exposure(flc)
    # template: READNSEA 4.57, READNSEC 4.25 ...; SCI,1 is WFC2 (amps C, D), SCI,2 WFC1 (A, B)
    p = exposure.primary
    assert chip_read_noise(p, ACS_WFC, 1) == pytest.approx((p["READNSEC"] + p["READNSED"]) / 2)
    assert chip_read_noise(p, ACS_WFC, 2) == pytest.approx((p["READNSEA"] + p["READNSEB"]) / 2)
    with pytest.raises(InputDataError, match="read-noise"):
        chip_read_noise({}, ACS_WFC, 1)


def test_lacosmic_finds_the_injected_crs_and_its_sweep_score_reproduces_each_mask() -> None:
    image, truth = synthetic_chip((160, 200), seed=12)
    mask = lacosmic_mask(image, read_noise=4.5, objlim=OBJLIM_BY_FIELD["extragalactic"])
    assert mask[truth].mean() > 0.5
    assert mask[~truth].mean() < 0.01
    sigclips = (3.0, 4.5, 8.0)
    score = lacosmic_score(image, read_noise=4.5, objlim=2.6, sigclips=sigclips)
    at_45 = score > sweep_threshold(4.5, sigclips)
    agree = (at_45 == mask).mean()
    assert agree > 0.999
    hist_cr, hist_noncr = score_histograms(score, truth, np.ones_like(truth))
    assert tpr_at_fpr(roc_from_histograms(hist_cr, hist_noncr), 0.005) > 0.3


def test_nan_pixels_are_never_flagged() -> None:
    image, _ = synthetic_chip((100, 120), seed=1)
    image[10:20, 10:20] = np.nan
    mask = lacosmic_mask(image, read_noise=4.5, objlim=2.6)
    assert not mask[10:20, 10:20].any()
