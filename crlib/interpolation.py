"""Linear interpolation from a coarse grid: smooth maps (WCS pixel mappings) evaluated on few nodes.

A chip-to-chip WCS mapping with distortion is smooth, so it is evaluated on a coarse grid of nodes
and interpolated: ``Wy @ values @ Wx.T`` with the weight matrices of :func:`interpolation_matrix`
gives the bilinear interpolation of a ``(len(ny_nodes), len(nx_nodes))`` grid on every pixel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interpolation_matrix"]


def interpolation_matrix(nodes: np.ndarray, size: int) -> np.ndarray:
    """Dense ``(size, len(nodes))`` linear-interpolation weights from ``nodes`` to ``0 .. size-1``.

    Parameters
    ----------
    nodes
        Increasing node positions, pixels (at least two). Positions outside the nodes are
        extrapolated linearly from the nearest pair.
    size
        Number of output positions (pixels ``0 .. size-1``).

    Returns
    -------
    numpy.ndarray
        float64 ``(size, len(nodes))``; each row sums to 1.
    """
    positions = np.arange(size, dtype=float)
    upper = np.clip(np.searchsorted(nodes, positions, side="right"), 1, len(nodes) - 1)
    lower = upper - 1
    frac = (positions - nodes[lower]) / (nodes[upper] - nodes[lower])
    matrix = np.zeros((size, len(nodes)))
    matrix[np.arange(size), lower] = 1.0 - frac
    matrix[np.arange(size), upper] += frac
    return matrix
