from __future__ import annotations

import numpy as np
import pytest

from crlib.metrics.crstats import count_cr_events, cr_statistics
from crlib.profiles import ACS_WFC


def test_events_are_connected_components_with_diagonals() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2, 2:7] = 1  # a horizontal track
    mask[10, 10] = mask[11, 11] = mask[12, 12] = 1  # a diagonal track: one event
    mask[18, 3] = 1  # a single pixel
    assert count_cr_events(mask) == 3
    stats = cr_statistics(mask, rootname="jx", chip=1, exptime_s=100.0, profile=ACS_WFC)
    assert stats.cr_pixels == 9 and stats.cr_events == 3
    area_cm2 = 400 * (15e-4) ** 2
    assert stats.rate_per_cm2_s == pytest.approx(3 / area_cm2 / 100.0)


def test_rate_uses_the_valid_area_only() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1, 1] = mask[8, 8] = True
    valid = np.zeros((10, 10), dtype=bool)
    valid[:5] = True
    stats = cr_statistics(mask, rootname="jx", chip=2, exptime_s=10.0, profile=ACS_WFC, valid=valid)
    assert stats.cr_events == 1
    assert stats.rate_per_cm2_s == pytest.approx(1 / (50 * ACS_WFC.pixel_area_cm2) / 10.0)
    with pytest.raises(ValueError, match="exposure time"):
        cr_statistics(mask, rootname="jx", chip=2, exptime_s=0.0, profile=ACS_WFC)


def test_chip_area_is_the_real_chip_size_in_15_micron_pixels() -> None:
    from crlib.metrics.crstats import chip_area_cm2

    assert ACS_WFC.pixel_size_um == 15.0
    assert chip_area_cm2(2048 * 4096, profile=ACS_WFC) == pytest.approx(18.874368)  # a full-frame chip
    assert chip_area_cm2(512 * 512, profile=ACS_WFC) == pytest.approx(0.589824)  # a WFC1-512 subarray


def test_statistics_of_a_one_chip_subarray_truth_use_its_own_area(tmp_path) -> None:
    from crlib.metrics.crstats import truth_cr_statistics
    from crlib.truth.product import write_truth_product

    mask = np.zeros((512, 512), np.uint8)
    mask[10, 10:14] = 1
    mask[300, 200] = 1
    valid = np.ones((512, 512), np.uint8)
    valid[:256] = 0  # half the chip is not valid: the first event does not count, the area halves
    path = write_truth_product(
        tmp_path / "jsub01abq_crtruth.fits", rootname="jsub01abq", masks={1: (mask, valid)}, provenance={}
    )
    (stats,) = truth_cr_statistics(path, rootname="jsub01abq", exptime_s=200.0, profile=ACS_WFC)
    assert stats.chip == 1 and stats.cr_events == 1
    assert stats.rate_per_cm2_s == pytest.approx(1 / (0.589824 / 2) / 200.0)
    valid[:256] = 1
    path = write_truth_product(
        tmp_path / "jsub02abq_crtruth.fits", rootname="jsub02abq", masks={1: (mask, valid)}, provenance={}
    )
    (stats,) = truth_cr_statistics(path, rootname="jsub02abq", exptime_s=200.0, profile=ACS_WFC)
    assert (stats.cr_events, stats.cr_pixels) == (2, 5)
    assert stats.rate_per_cm2_s == pytest.approx(2 / 0.589824 / 200.0)


def test_a_valid_mask_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        cr_statistics(
            np.zeros((4, 4)), rootname="jx", chip=1, exptime_s=1.0, profile=ACS_WFC, valid=np.ones((2, 2))
        )
