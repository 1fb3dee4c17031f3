"""Which pixels of a chip count in a score: the truth's valid mask narrowed by :class:`ScoringRules`.

A pixel is scored when

* the truth product's ``VALID`` is nonzero (drizzle truth already leaves out DQ-flagged,
  uncovered and saturated pixels; simulated truth has no ``VALID``: every pixel),
* it lies more than ``rules.border_px`` pixels from every chip edge (the deepCR-ACS/WFC paper
  discards 128 px), and
* with ``rules.exclude_dq``, the FLC's ``DQ`` has no bit set apart from ``rules.label_dq_bits``
  (the CR flags, which are the labels).

A chip not larger than twice the border in both axes keeps no pixel and is left out of the score,
as patch datasets skip it (padding it would score only the chip edge, where truth is least
reliable).

Arrays only: the FLC's DQ arrays are read by the scoring step (:func:`crlib.metrics.scoring.read_dq`).
"""

from __future__ import annotations

import logging

import numpy as np

from crlib.profiles import ScoringRules

log = logging.getLogger(__name__)

__all__ = ["fits_border", "inside_border", "scored_pixels"]


def inside_border(shape: tuple[int, ...], border_px: int) -> np.ndarray:
    """bool ``shape``: False within ``border_px`` pixels of the edge (all True for 0)."""
    inside = np.zeros(shape, dtype=bool)
    if border_px > 0:
        inside[border_px:-border_px, border_px:-border_px] = True
    else:
        inside[...] = True
    return inside


def fits_border(shape: tuple[int, ...], border_px: int) -> bool:
    """Whether a chip of ``shape`` (ny, nx) keeps pixels inside a ``border_px`` border."""
    return all(n > 2 * border_px for n in shape[-2:])


def scored_pixels(valid: np.ndarray, *, rules: ScoringRules, dq: np.ndarray | None = None) -> np.ndarray:
    """The pixels of one chip that count, bool (ny, nx).

    Parameters
    ----------
    valid
        ``(ny, nx)`` truth valid mask (nonzero = usable).
    rules
        Border and DQ rules.
    dq
        ``(ny, nx)`` FLC data-quality flags; required when ``rules.exclude_dq`` (``None`` there
        means the file has no DQ array: nothing is flagged).

    Raises
    ------
    ValueError
        ``dq`` of another shape.
    """
    scored = np.asarray(valid, dtype=bool) & inside_border(valid.shape, rules.border_px)
    if rules.exclude_dq and dq is not None:
        if dq.shape != valid.shape:
            raise ValueError(f"DQ shape {dq.shape} differs from the chip's {valid.shape}")
        scored &= (dq.astype(np.int64) & ~np.int64(rules.label_dq_bits)) == 0
    return scored
