"""A visit frame for scene tests: a TAN WCS of 0.05" pixels near M31, pixel (0, 0) at the anchor."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS


def tan_frame() -> WCS:
    """North up, east left, 0.05"/px, reference pixel at 0-based (0, 0)."""
    frame = WCS(naxis=2)
    frame.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    frame.wcs.crval = [10.95, 41.5]
    frame.wcs.crpix = [1.0, 1.0]
    frame.wcs.cd = np.array([[-0.05, 0.0], [0.0, 0.05]]) / 3600.0
    return frame
