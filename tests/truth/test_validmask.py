"""Coverage counts: which pixels other exposures cover with a pixel drizzle uses."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from crlib.truth.validmask import chip_frame, coverage_count


def _wcs(crpix_x: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [crpix_x, 100.0]
    wcs.wcs.cdelt = [-0.05 / 3600, 0.05 / 3600]
    return wcs


def test_coverage_counts_other_exposures_good_pixels_where_they_land():
    """Exposure B sees the sky 10 px further along x than A; A's pixel x lands on B's x - 10."""
    shape = (300, 400)
    dq_b = np.zeros(shape, dtype=np.int16)
    dq_b[50:60, 100:120] = 4  # bad in B: A's pixels (50-59, 110-129) are not covered by it
    dq_b[200:210, 200:220] = 16  # hot in B: drizzle uses it, so it still covers
    a = chip_frame("a", 1, _wcs(200.0), shape, np.zeros(shape, dtype=np.int16))
    b = chip_frame("b", 1, _wcs(190.0), shape, dq_b)
    c = chip_frame("c", 1, _wcs(200.0), shape, np.zeros(shape, dtype=np.int16))  # on A's grid
    count = coverage_count(a, [b, c])
    assert count.dtype == np.uint8
    assert (count[:, 10:] >= 1).all()
    assert count[:, 10:].max() == 2 and (count[:, :9] == 1).all()  # B ends 10 px before A's edge
    assert (count[50:60, 111:129] == 1).all() and count[49, 111] == 2 and count[60, 128] == 2
    assert (count[200:210, 211:229] == 2).all()
    assert (coverage_count(a, [a]) == 0).all()  # an exposure never covers itself
