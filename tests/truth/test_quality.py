"""Quality gates, CR-component pruning and the SVM parameter sets."""

from __future__ import annotations

import numpy as np
import pytest

from crlib.profiles import ACS_WFC, WFC3_UVIS
from crlib.truth.parameters import load_svm_parameters
from crlib.truth.quality import ChipQuality, assess, count_events
from crlib.truth.refine import prune_insignificant


def _chip(**changes) -> ChipQuality:
    values = dict(
        chip=1,
        cr_pixels=8000,
        cr_events=1000,
        valid_pixels=1_000_000,
        total_pixels=1_000_000,
        exptime_s=400.0,
        pixel_area_cm2=ACS_WFC.pixel_area_cm2,
        star_core_pixels=1000,
        star_core_flagged=0,
    )
    values.update(changes)
    return ChipQuality(**values)


def test_plausible_chip_is_ok():
    status, reasons = assess(
        [_chip()],
        expected_rate_per_cm2_s=1.2,
        alignment_rms_px=0.2,
        alignment_status="aligned_relative",
        alignment_matches=200,
    )
    assert status == "ok" and reasons == ()


@pytest.mark.parametrize(
    ("chip", "rms", "matches", "expected", "word"),
    [
        (_chip(star_core_flagged=300), 0.2, 200, "failed", "star-core"),
        (_chip(star_core_flagged=50), 0.2, 200, "suspect", "star-core"),
        (_chip(cr_events=36000, cr_pixels=300_000), 0.2, 200, "failed", "CR"),
        (_chip(valid_pixels=300_000), 0.2, 200, "suspect", "valid fraction"),
        (_chip(), 0.7, 200, "suspect", "alignment rms"),
        (_chip(), 0.45, 2, "suspect", "alignment error"),
    ],
)
def test_gates(chip, rms, matches, expected, word):
    status, reasons = assess(
        [chip],
        expected_rate_per_cm2_s=1.2,
        alignment_rms_px=rms,
        alignment_status="aligned_relative",
        alignment_matches=matches,
    )
    assert status == expected
    assert any(word in r for r in reasons)


def test_unaligned_visit_is_suspect():
    status, reasons = assess(
        [_chip()], expected_rate_per_cm2_s=1.2, alignment_rms_px=None, alignment_status="not_aligned"
    )
    assert status == "suspect" and "not_aligned" in reasons[0]


@pytest.mark.parametrize(
    ("status", "header_error", "expected", "word"),
    [
        ("not_aligned", 0.1, "ok", None),
        ("not_aligned", 0.4, "suspect", "misaligned by ~0.400 px"),
        ("aligned_relative", 0.1, "ok", None),
        ("aligned_relative", float("inf"), "suspect", "could not be measured"),
    ],
)
def test_exposures_left_on_their_header_wcs_are_judged_by_its_measured_offset(
    status, header_error, expected, word
):
    verdict, reasons = assess(
        [_chip()],
        expected_rate_per_cm2_s=1.2,
        alignment_rms_px=0.2 if status.startswith("aligned") else None,
        alignment_status=status,
        alignment_matches=200,
        header_error_px=header_error,
    )
    assert verdict == expected, reasons
    assert word is None or any(word in r for r in reasons)


def test_prune_keeps_real_hits_and_drops_noise_blips():
    rng = np.random.default_rng(0)
    model = np.full((100, 100), 40.0, dtype=np.float32)
    sci = model + rng.normal(0, np.sqrt(40 + 20), model.shape).astype(np.float32)
    sci[10, 10] += 400.0
    mask = np.zeros_like(sci, dtype=np.uint8)
    mask[9:12, 9:12] = 1  # a real hit grown by one pixel
    sci[50, 50] = model[50, 50] + 3.6 * np.sqrt(60)  # a 3.6-sigma noise excursion driz_cr flags
    mask[49:52, 49:52] = 1
    pruned, removed = prune_insignificant(mask, sci, model, read_noise_e=np.sqrt(20))
    assert removed == 1
    assert pruned[10, 10] == 1 and pruned[50, 50] == 0
    assert count_events(pruned) == 1


def test_svm_parameter_sets_follow_exposure_count():
    condition, pars = load_svm_parameters(ACS_WFC, 3)
    assert condition == "acs_wfc_any_n2" and pars["combine_type"] == "minmed"
    condition, pars = load_svm_parameters(ACS_WFC, 6)
    assert condition == "acs_wfc_any_n6" and pars["combine_type"] == "median"
    condition, _ = load_svm_parameters(WFC3_UVIS, 2)
    assert condition == "wfc3_uvis_any_post_n2"
    assert "_mdriztab_btn_" not in pars
    with pytest.raises(ValueError, match="at least 2"):
        load_svm_parameters(ACS_WFC, 1)


def test_every_gate_reason_fits_in_a_fits_header(tmp_path):
    """Reasons become COMMENT cards: a reason FITS cannot hold would crash the visit's truth stage."""
    from astropy.io import fits

    from crlib.truth.product import write_truth_product

    _, reasons = assess(
        [_chip(cr_events=36000, cr_pixels=300_000, star_core_flagged=300, valid_pixels=300_000)],
        expected_rate_per_cm2_s=1.2,
        alignment_rms_px=0.7,
        alignment_status="aligned_relative",
        alignment_matches=9,
    )
    assert any("CR rate" in r for r in reasons)
    assert all(r.isascii() for r in reasons)
    mask = np.zeros((4, 4), dtype=np.uint8)
    path = write_truth_product(
        tmp_path / "x_crtruth.fits",
        rootname="x",
        masks={1: (mask, mask)},
        provenance={"METHOD": "drizzle", "WORKDIR": "/data/visité"},
        reasons=(*reasons, "flagged 5 events/cm²/s"),
    )
    with fits.open(path) as hdul:
        comments = [str(c) for c in hdul[0].header["COMMENT"]]
        assert hdul[0].header["WORKDIR"] == "/data/visit?"
    assert any("events/cm?/s" in c for c in comments)
    assert len(comments) == len(reasons) + 1


@pytest.mark.parametrize("fraction", [0.02, 0.5])
def test_local_maxima_equal_the_maximum_filters_at_the_candidates(fraction):
    """Sparse candidates (gathered neighbours) and dense ones (the filter itself) give the filter's
    answer, plateaus and chip edges included."""
    from scipy.ndimage import maximum_filter

    from crlib.truth.quality import local_maxima

    rng = np.random.default_rng(3)
    image = rng.integers(0, 40, size=(61, 47)).astype(np.float32)  # integers: many ties
    image[0, 0] = image[-1, -1] = image[30, -1] = 100.0  # peaks on the edges
    image[10:12, 10:12] = 90.0  # a plateau: all four are maxima
    candidates = rng.random(image.shape) < fraction
    for y, x in ((0, 0), (-1, -1), (30, -1), (10, 10), (11, 11)):
        candidates[y, x] = True
    expected = candidates & (image == maximum_filter(image, size=5))
    found = local_maxima(image, candidates, size=5)
    assert np.array_equal(found, expected)
    assert found[0, 0] and found[-1, -1] and found[30, -1] and found[10, 10] and found[11, 11]
