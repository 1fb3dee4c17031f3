"""CR-robust background of a chip on a grid of tiles: level, per-pixel noise, interpolation.

Each ``TILE_PX`` x ``TILE_PX`` tile is summarised by quantiles of its valid pixels
(:func:`tile_quantiles`); the level is the tile median after a 3x3-tile median filter and the noise
comes from the lower half of each tile's distribution (:func:`background_map`), so point sources
and cosmic rays do not move either; :func:`upsample` interpolates a tile grid back to pixels.
Used by :mod:`crlib.classify.features`. Everything here takes numpy arrays (no file I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

#: Background tiles, pixels on a side.
TILE_PX = 64

FloatArray = NDArray[np.float64]


def pad_to(array: NDArray[Any], shape: tuple[int, int], fill: Any) -> NDArray[Any]:
    """``array`` in the top-left corner of a ``shape`` array filled with ``fill``."""
    out = np.full(shape, fill, dtype=array.dtype)
    out[: array.shape[0], : array.shape[1]] = array
    return out


def tile_quantiles(
    image: FloatArray, valid: NDArray[np.bool_], quantiles: Sequence[float], *, tile: int = TILE_PX
) -> tuple[FloatArray, NDArray[np.int64]]:
    """Quantiles of the valid pixels in each ``tile`` x ``tile`` tile.

    Parameters
    ----------
    image
        (ny, nx) image.
    valid
        (ny, nx) bool, pixels to use.
    quantiles
        Quantiles in [0, 1].
    tile
        Tile size, pixels (edge tiles are partial).

    Returns
    -------
    values
        (len(quantiles), gy, gx); NaN where a tile has fewer than a quarter of its pixels valid.
    counts
        (gy, gx) valid pixels per tile.
    """
    ny, nx = image.shape
    gy, gx = -(-ny // tile), -(-nx // tile)
    data = pad_to(np.where(valid, image, np.inf).astype(np.float64), (gy * tile, gx * tile), np.inf)
    blocks = data.reshape(gy, tile, gx, tile).transpose(0, 2, 1, 3).reshape(gy, gx, tile * tile)
    blocks.sort(axis=2)
    counts = np.isfinite(blocks).sum(axis=2)
    out = np.full((len(quantiles), gy, gx), np.nan)
    usable = counts >= (tile * tile) // 4
    for k, q in enumerate(quantiles):
        index = np.clip(np.floor(q * (counts - 1)).astype(np.int64), 0, tile * tile - 1)
        values = np.take_along_axis(blocks, index[..., None], axis=2)[..., 0]
        out[k] = np.where(usable, values, np.nan)
    return out, counts


def _fill_nan(grid: FloatArray) -> FloatArray:
    """Replace NaN tiles by the nearest finite tile (all-NaN grids stay NaN)."""
    bad = ~np.isfinite(grid)
    if not bad.any() or bad.all():
        return grid
    index = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return np.asarray(grid[tuple(index)], dtype=np.float64)


def background_map(
    image: FloatArray, valid: NDArray[np.bool_], *, tile: int = TILE_PX
) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """Smooth background level and per-pixel noise of one chip, on the tile grid.

    Parameters
    ----------
    image
        (ny, nx) science array, electrons.
    valid
        (ny, nx) bool, pixels to use.
    tile
        Tile size, pixels.

    Returns
    -------
    level
        (gy, gx) tile medians after a 3x3-tile median filter, electrons.
    sigma
        (gy, gx) per-pixel noise from the lower half of each tile's distribution
        (``(median - 25th percentile) / 0.6745``; sources only widen the upper half), electrons.
    counts
        (gy, gx) valid pixels per tile.
    """
    (q25, q50), counts = tile_quantiles(image, valid, (0.25, 0.5), tile=tile)
    level = _fill_nan(q50)
    if np.isfinite(level).all() and min(level.shape) >= 3:
        level = ndimage.median_filter(level, size=3, mode="nearest")
    sigma = _fill_nan((q50 - q25) / 0.6745)
    return level, sigma, counts


def upsample(grid: FloatArray, shape: tuple[int, int], *, tile: int = TILE_PX) -> FloatArray:
    """Bilinear interpolation of a tile grid (values at tile centres) to a (ny, nx) pixel grid."""
    gy, gx = grid.shape
    ys = np.clip((np.arange(shape[0]) + 0.5) / tile - 0.5, 0, gy - 1)
    xs = np.clip((np.arange(shape[1]) + 0.5) / tile - 0.5, 0, gx - 1)
    y0 = np.minimum(np.floor(ys).astype(np.int64), gy - 1)
    x0 = np.minimum(np.floor(xs).astype(np.int64), gx - 1)
    y1, x1 = np.minimum(y0 + 1, gy - 1), np.minimum(x0 + 1, gx - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return np.asarray(top * (1 - wy) + bottom * wy, dtype=np.float64)
