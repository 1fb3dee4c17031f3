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
