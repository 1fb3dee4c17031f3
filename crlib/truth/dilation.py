"""Dilation of a boolean mask by a rectangle of ones, as shifted ORs along each axis.

``scipy.ndimage.binary_dilation`` with a full rectangular structure visits every structure
element at every pixel, and a separable ``maximum_filter`` still costs ~12 ns per pixel and pass.
A rectangle of half-sides ``(ry, rx)`` is the OR of the mask shifted by up to ``ry`` rows, then
of that shifted by up to ``rx`` columns: ``2 * (ry + rx)`` ORs of whole byte arrays, each at
memory speed (``tests/truth/test_dilation.py`` checks the result equals ``binary_dilation``,
edges included). On a full ACS/WFC chip (4096 x 2048) a 3x3 dilation takes ~10 ms against
~200 ms for the maximum filter.
"""

from __future__ import annotations

import numpy as np


def _dilate_axis(flags: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """``flags`` ORed with its copies shifted by 1..``radius`` pixels both ways along ``axis``."""
    grown = flags.copy()
    size = flags.shape[axis]
    for step in range(1, min(radius, size - 1) + 1):
        lead = [slice(None)] * flags.ndim
        trail = [slice(None)] * flags.ndim
        lead[axis], trail[axis] = slice(step, None), slice(None, size - step)
        grown[tuple(lead)] |= flags[tuple(trail)]
        grown[tuple(trail)] |= flags[tuple(lead)]
    return grown


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
        bool (ny, nx), a new array; pixels outside the image count as unset, as in
        ``binary_dilation``.
    """
    if any(size < 1 or size % 2 == 0 for size in shape):
        raise ValueError(f"the rectangle must have odd sides (got {shape})")
    grown = np.array(mask, dtype=bool, copy=True)
    for axis, size in enumerate(shape):
        if size > 1:
            grown = _dilate_axis(grown, size // 2, axis)
    return grown
