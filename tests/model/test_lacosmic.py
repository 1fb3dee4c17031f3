from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crlib.errors import ConfigError, InputDataError
from crlib.metrics.histograms import score_histograms
from crlib.metrics.roc import roc_from_histograms, tpr_at_fpr
from crlib.metrics.scoring import score_prediction_file
from crlib.model.exposure import read_exposure
from crlib.model.lacosmic import (
    OBJLIM_BY_FIELD,
    chip_read_noise,
    lacosmic_mask,
    lacosmic_score,
    objlim_for,
    predict_exposure_lacosmic,
    sweep_threshold,
)
from crlib.model.predfile import read_prediction
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


def test_exposure_sweep_is_written_as_a_prediction_file_and_scored_like_a_model(
    flc_factory, tmp_path
) -> None:
    from astropy.io import fits

    flc, truths = flc_factory("jlac01aq", shape=(150, 180), seed=21)
    result = predict_exposure_lacosmic(
        flc, out_dir=tmp_path / "pred", objlim=objlim_for("globular_cluster"), sigclips=(8.0, 3.0, 4.0, 3.0)
    )
    assert result.status == "ok" and result.model_name == "LACosmic"
    assert result.model_version.startswith("astroscrappy-")
    primary, chips = read_prediction(Path(result.path))
    assert primary["CRMODEL"] == "LACosmic" and primary["CRSWEEP"] == "3,4,8"
    assert primary["CRSIGCLP"] == 4.0 and primary["CROBJLIM"] == 2.6
    exposure = read_exposure(flc)
    for chip in chips:
        sci = exposure.chips[chip.extver][0]
        noise = chip_read_noise(exposure.primary, exposure.profile, chip.extver)
        expected = lacosmic_score(sci, read_noise=noise, objlim=2.6, sigclips=(3.0, 4.0, 8.0))
        assert np.array_equal(
            chip.probability.astype(np.float32), expected.astype(np.float16).astype(np.float32)
        )
        assert np.array_equal(chip.mask.astype(bool), expected > sweep_threshold(4.0, (3.0, 4.0, 8.0)))
    truth = tmp_path / "jlac01aq_simtruth.fits"
    fits.HDUList(
        [fits.PrimaryHDU()]
        + [fits.ImageHDU(m.astype("uint8"), name="CRMASK", ver=v) for v, m in truths.items()]
    ).writeto(truth)
    metrics, curves = score_prediction_file(Path(result.path), truth)
    assert metrics.model_name == "LACosmic" and metrics.tp > 0
    assert 0.3 < metrics.tpr_at_fpr["0.005"] <= 1.0
    assert len(set(curves["plain"].fpr.round(9))) <= 3 + 2  # one ROC point per sweep value, plus the ends


def test_unknown_field_type_and_empty_sweep_are_config_errors(flc_factory, tmp_path) -> None:
    with pytest.raises(ConfigError, match="field type"):
        objlim_for("mixed")
    flc, _ = flc_factory("jlac02aq", shape=(60, 80))
    with pytest.raises(ConfigError, match="sweep"):
        predict_exposure_lacosmic(flc, out_dir=tmp_path, objlim=2.6, sigclips=())
