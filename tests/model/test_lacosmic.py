from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from testsupport.flc import synthetic_chip

from crlib.errors import ConfigError, InputDataError
from crlib.formats.flc import read_exposure
from crlib.formats.prediction import read_prediction
from crlib.metrics.histograms import score_histograms
from crlib.metrics.roc import roc_from_histograms, tpr_at_fpr
from crlib.metrics.scoring import score_prediction_file
from crlib.model.lacosmic import (
    SIGCLIP_SWEEP,
    _LACosmic,
    chip_read_noise,
    critical_sigclip,
    first_pass_sigclip,
    lacosmic_mask,
)
from crlib.model.lacosmic_score import (
    OBJLIM_BY_FIELD,
    lacosmic_score,
    objlim_for,
    predict_exposure_lacosmic,
    refined_sweep,
    sigclip_probability,
    sweep_refinement_check,
    sweep_threshold,
)
from crlib.profiles import ACS_WFC


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    """astroscrappy's OpenMP threads spin-wait: on a busy 2-core machine one thread is ~3x faster."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


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
    assert primary["CRPROBFN"] == "1/(1+(8/s)^3)"
    exposure = read_exposure(flc)
    for chip in chips:
        sci = exposure.chips[chip.extver][0]
        noise = chip_read_noise(exposure.primary, exposure.profile, chip.extver)
        critical = critical_sigclip(sci, read_noise=noise, objlim=2.6, sigclips=(3.0, 4.0, 8.0))
        expected = sigclip_probability(critical)
        assert np.array_equal(
            chip.probability.astype(np.float32), expected.astype(np.float16).astype(np.float32)
        )
        # CRMASK is astroscrappy's own mask at CRSIGCLP
        exact = lacosmic_mask(sci, read_noise=noise, objlim=2.6, sigclip=4.0)
        assert np.array_equal(chip.mask.astype(bool), exact)
        assert (chip.mask.astype(bool) != (expected > sweep_threshold(4.0))).mean() < 1e-3
    truth = tmp_path / "jlac01aq_simtruth.fits"
    fits.HDUList(
        [fits.PrimaryHDU()]
        + [fits.ImageHDU(m.astype("uint8"), name="CRMASK", ver=v) for v, m in truths.items()]
    ).writeto(truth)
    metrics, curves = score_prediction_file(Path(result.path), truth)
    assert metrics.model_name == "LACosmic" and metrics.tp > 0
    assert 0.3 < metrics.tpr_at_fpr["0.005"] <= 1.0
    # the score is continuous between swept values: many more ROC points than sweep values
    assert len(set(curves["plain"].fpr.round(9))) > 20


def test_unknown_field_type_and_empty_sweep_are_config_errors(flc_factory, tmp_path) -> None:
    with pytest.raises(ConfigError, match="field type"):
        objlim_for("mixed")
    flc, _ = flc_factory("jlac02aq", shape=(60, 80))
    with pytest.raises(ConfigError, match="sweep"):
        predict_exposure_lacosmic(flc, out_dir=tmp_path, objlim=2.6, sigclips=())


def _chip_with_nan(seed: int = 4) -> np.ndarray:
    image, _ = synthetic_chip((140, 170), seed=seed)
    image[30:34, 40:52] = np.nan
    return image


@pytest.mark.parametrize("sigclip", [2.0, 3.5, 4.5, 10.0])
def test_own_iterations_equal_astroscrappy_masks(sigclip: float) -> None:
    """Sharing the first iteration changes nothing: every mask equals astroscrappy's, NaNs included."""
    image = _chip_with_nan()
    runner = _LACosmic(image, read_noise=4.5, objlim=2.6)
    mask, _ = runner.run(sigclip)
    reference = lacosmic_mask(image, read_noise=4.5, objlim=2.6, sigclip=sigclip)
    assert reference.sum() > 0
    assert np.array_equal(mask, reference)
    assert not mask[30:34, 40:52].any()


def test_first_pass_is_astroscrappys_first_iteration_at_every_sigclip() -> None:
    import astroscrappy

    image = _chip_with_nan(seed=6)
    first = first_pass_sigclip(image, read_noise=4.5, objlim=2.6)
    filled = np.where(np.isfinite(image), image, np.nanmedian(image)).astype(np.float32)
    for sigclip in (1.5, 2.7, 4.5, 7.3, 15.0):
        mask, _ = astroscrappy.detect_cosmics(
            filled,
            inmask=~np.isfinite(image),
            sigclip=sigclip,
            sigfrac=0.3,
            objlim=2.6,
            gain=1.0,
            readnoise=4.5,
            satlevel=np.inf,
            sepmed=False,
            cleantype="medmask",
            niter=1,
        )
        assert np.array_equal(first > sigclip, mask), sigclip


def test_critical_sigclip_thresholded_at_a_swept_value_is_lacosmics_mask_there() -> None:
    image = _chip_with_nan(seed=8)
    sweep = (2.5, 3.0, 4.0, 6.0, 9.0, 12.0)
    masks = np.stack([lacosmic_mask(image, read_noise=4.5, objlim=2.6, sigclip=g) for g in sweep])
    # pixels whose flags are not nested (flagged at a stricter value, not at a looser one)
    flicker = (np.diff(masks.astype(np.int8), axis=0) > 0).any(axis=0)
    assert flicker.sum() < 0.05 * masks.any(axis=0).sum()
    union = critical_sigclip(image, read_noise=4.5, objlim=2.6, sigclips=sweep, nesting="union")
    closest = critical_sigclip(image, read_noise=4.5, objlim=2.6, sigclips=sweep)
    for i, g in enumerate(sweep):
        # union: the masks at g and every stricter swept value
        assert np.array_equal(union >= g, masks[i:].any(axis=0)), g
        # closest: exactly LACosmic's mask for every nested pixel; flickering ones err both ways
        assert np.array_equal((closest >= g)[~flicker], masks[i][~flicker]), g
    for critical in (union, closest):
        assert critical.dtype == np.float32 and critical.min() == 0.0
        assert np.all(critical[30:34, 40:52] == 0)
    # between swept values the score is continuous, not a step per sweep value
    inside = closest[(closest > 4.0) & (closest < 6.0)]
    assert np.unique(inside).size > 10
    with pytest.raises(ConfigError, match="nesting"):
        critical_sigclip(image, read_noise=4.5, objlim=2.6, sigclips=sweep, nesting="any")  # type: ignore[arg-type]


def test_probability_is_monotone_in_sigclip_and_thresholds_match() -> None:
    sigclips = np.array([0.0, 1.0, 2.0, 3.4, 8.0, 12.0, 30.0])
    p = sigclip_probability(sigclips)
    assert p[0] == 0.0 and np.all(np.diff(p) > 0) and p[-1] < 1.0
    assert sigclip_probability(8.0) == pytest.approx(0.5)
    for g in (2.0, 4.5, 10.0):
        assert sigclip_probability(g) > sweep_threshold(g) > sigclip_probability(g * 0.999)
    assert refined_sweep((2.0, 3.0, 5.0)) == (2.0, 2.5, 3.0, 4.0, 5.0)


def test_refining_the_sweep_barely_moves_the_tpr_at_the_fpr_points() -> None:
    """The refinement check on small chips: the structure, and the default sweep's TPR is stable."""
    image, truth = synthetic_chip((160, 200), seed=31, n_crs=150, n_stars=20)
    chips = [(image, truth, np.ones_like(truth), 4.5)]
    check = sweep_refinement_check(chips, objlim=2.6, sigclips=SIGCLIP_SWEEP)
    assert check["sigclips"] == sorted(SIGCLIP_SWEEP)
    assert len(check["refined_sigclips"]) == 2 * len(SIGCLIP_SWEEP) - 1
    assert set(check["sweep"]) == set(check["refined"]) == {"0.0005", "0.005"}
    for key, change in check["change"].items():
        assert 0.0 < check["sweep"][key] <= 1.0
        assert abs(change) <= 1.0, (key, check)
