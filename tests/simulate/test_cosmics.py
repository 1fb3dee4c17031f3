"""Cosmic rays arrive at the configured on-orbit rate with realistic morphology and charge."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from crlib.profiles import ACS_WFC
from crlib.simulate.cosmics import CosmicRayModel, inject_cosmic_rays, mean_pixels_per_event

MODEL = CosmicRayModel(rate_per_cm2_s=ACS_WFC.cr_rate_per_cm2_s, pixel_area_cm2=ACS_WFC.pixel_area_cm2)
SHAPE = (1024, 2048)


@pytest.mark.parametrize("exptime_s", [100.0, 500.0, 1200.0])
def test_event_rate_and_pixel_fraction_per_second_match_the_configuration(exptime_s: float) -> None:
    hits = inject_cosmic_rays(np.random.default_rng(int(exptime_s)), SHAPE, exptime_s=exptime_s, model=MODEL)
    mask = hits.mask(MODEL.mask_threshold_e)
    _, events_seen = ndimage.label(mask, structure=np.ones((3, 3)))
    area_cm2 = SHAPE[0] * SHAPE[1] * ACS_WFC.pixel_area_cm2
    measured_rate = events_seen / area_cm2 / exptime_s
    assert measured_rate == pytest.approx(ACS_WFC.cr_rate_per_cm2_s, rel=0.2)
    expected_fraction_per_s = (
        ACS_WFC.cr_rate_per_cm2_s * ACS_WFC.pixel_area_cm2 * mean_pixels_per_event(MODEL)
    )
    assert mask.mean() / exptime_s == pytest.approx(expected_fraction_per_s, rel=0.2)


def test_five_hundred_seconds_hit_one_to_three_percent_of_pixels() -> None:
    hits = inject_cosmic_rays(np.random.default_rng(5), SHAPE, exptime_s=500.0, model=MODEL)
    assert 0.01 <= hits.mask(MODEL.mask_threshold_e).mean() <= 0.03


def test_morphology_spans_compact_hits_tracks_and_charge_of_hundreds_to_thousands() -> None:
    hits = inject_cosmic_rays(np.random.default_rng(7), SHAPE, exptime_s=1000.0, model=MODEL)
    labels, count = ndimage.label(hits.mask(MODEL.mask_threshold_e), structure=np.ones((3, 3)))
    index = np.arange(1, count + 1)
    sizes = ndimage.sum(np.ones(SHAPE), labels, index)
    charge = ndimage.sum(hits.charge, labels, index)
    extents = [max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)]
    assert np.mean(sizes <= 9) > 0.3  # compact hits
    assert np.sum(np.array(extents) >= 15) > 20  # long tracks and worms (~1% of events)
    assert 300 < np.median(charge) < 5000
    assert np.percentile(charge, 95) > 2 * np.median(charge)  # Landau-like tail


def test_archive_exposures_record_cr_fractions_at_the_configured_rate(small_archive, read_visit_json) -> None:
    for visit in small_archive.visits:
        truth = read_visit_json(visit.directory)
        expected = truth["cosmic_rays"]["expected_pixel_fraction_per_s"]
        assert truth["cosmic_rays"]["rate_per_cm2_s"] == ACS_WFC.cr_rate_per_cm2_s
        recorded = {e["rootname"]: e for e in truth["exposures"]}
        per_unit_rate = []
        for exposure in visit.exposures:
            # the realistic simulator scales each exposure's rate by a recorded log-normal factor,
            # and CTE trails add a few pixels to each event: events follow the factor exactly,
            # the pixel fraction within the trails' share
            entry = recorded[exposure.rootname]
            factor = entry.get("effects", {}).get("cr_rate_factor", 1.0)
            per_unit_rate.append(sum(entry["cr_events"]) / exposure.exptime_s / factor)
            fraction_rate = exposure.cr_pixel_fraction / exposure.exptime_s
            assert expected * factor * 0.8 <= fraction_rate <= expected * factor * 1.5
            with fits.open(exposure.truth_path) as truth_file:
                for extver in (1, 2):
                    mask = truth_file["CRMASK", extver].data
                    charge = truth_file["CRCHARGE", extver].data
                    assert mask.dtype == np.uint8
                    np.testing.assert_array_equal(mask, (charge >= truth["cosmic_rays"]["mask_threshold_e"]))
        # event counts per second, divided by each exposure's factor, agree (Poisson: ~4 %)
        assert max(per_unit_rate) / min(per_unit_rate) < 1.25, per_unit_rate
