"""Dilation of a boolean mask by a rectangle of ones, as a separable maximum filter.

``scipy.ndimage.binary_dilation`` with a full rectangular structure visits every structure
element at every pixel; a maximum filter of the same (odd) size computes the same mask one axis
at a time (``tests/truth/test_dilation.py`` checks them equal), several times faster on a
full ACS/WFC chip.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dilate_rectangle(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` dilated by a ``shape`` rectangle of ones centred on each pixel.

    Parameters
    ----------
    mask
        bool (ny, nx).
    shape
        ``(rows, columns)`` of the rectangle, both odd (a centred rectangle).

    Returns
    -------
    numpy.ndarray
        bool (ny, nx); pixels outside the image count as unset, as in ``binary_dilation``.
    """
    if any(size < 1 or size % 2 == 0 for size in shape):
        raise ValueError(f"the rectangle must have odd sides (got {shape})")
    flags = np.ascontiguousarray(mask, dtype=bool)
    grown = ndimage.maximum_filter(flags.view(np.uint8), size=shape, mode="constant", cval=0)
    return grown.view(bool)
