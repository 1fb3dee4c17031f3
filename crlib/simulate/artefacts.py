"""Per-pixel artefact labels of the truth file, and the archive's own CR flags (DQ 4096).

The ``ARTEFACT`` extension of ``<rootname>_simtruth.fits`` (uint8, one per chip, ``EXTVER`` = SCI
extver) says which pixels carry something other than a CR that a CR detector could mistake for
one, so fidelity can be judged per artefact class. Bits (:data:`ARTEFACT_BITS`):

* 1 ``CTE_TRAIL``: net charge CTE moved into the pixel from non-CR sources (stars, hot pixels,
  satellite trails) >= 5 e-;
* 2 ``HOT_PIXEL``: hot or warm pixel (flagged or not);
* 4 ``UNFLAGGED_HOT``: hot or warm pixel without a DQ flag (new since the dark reference file);
* 8 ``SINK``: sink pixel or its trail (DQ 1024);
* 16 ``SATELLITE``: satellite-trail charge >= 5 e-;
* 32 ``BAD_COLUMN``: bad column segment (DQ 4).

A CR pixel can carry artefact bits too (a CR on a satellite trail): fidelity judges artefact
pixels that are not CRs.
"""

from __future__ import annotations

import numpy as np

CTE_TRAIL = 1
HOT_PIXEL = 2
UNFLAGGED_HOT = 4
SINK = 8
SATELLITE = 16
BAD_COLUMN = 32

ARTEFACT_BITS = {
    "cte_trail": CTE_TRAIL,
    "hot_pixel": HOT_PIXEL,
    "unflagged_hot": UNFLAGGED_HOT,
    "sink": SINK,
    "satellite": SATELLITE,
    "bad_column": BAD_COLUMN,
}

#: Charge (e-) from which a trail pixel counts as part of the artefact (the CR mask's threshold).
ARTEFACT_THRESHOLD_E = 5.0

#: DQ bit AstroDrizzle ORs into the FLC for pixels its driz_cr flagged.
DQ_CR_DRIZ = 4096
#: CR charge (e-) from which the archive's earlier driz_cr run flagged a pixel, and its grow radius.
PRIOR_DRIZZLE_MIN_E = 25.0


def prior_drizzle_flags(cr_charge: np.ndarray, unflagged_hot: np.ndarray | None = None) -> np.ndarray:
    """bool (ny, nx): pixels the archive's own AstroDrizzle run flagged DQ 4096.

    calacs' AstroDrizzle step flags CRs in the FLC it delivers; its driz_cr finds CR pixels above
    a few sigma and grows them by one pixel (``driz_cr_grow=1``); it also flags unflagged hot
    pixels of a dithered visit. We flag CR charge >= ``PRIOR_DRIZZLE_MIN_E`` grown by 3x3, and the
    ``unflagged_hot`` pixels given.
    """
    from scipy.ndimage import binary_dilation

    flags = binary_dilation(cr_charge >= PRIOR_DRIZZLE_MIN_E, structure=np.ones((3, 3), dtype=bool))
    if unflagged_hot is not None:
        flags |= unflagged_hot
    return np.asarray(flags, dtype=bool)


def artefact_mask(
    shape: tuple[int, int],
    *,
    cte_trail: np.ndarray | None = None,
    hot: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    sink: tuple[np.ndarray, np.ndarray] | None = None,
    satellite: np.ndarray | None = None,
    bad_columns: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (ny, nx) artefact bits of one chip window.

    Parameters
    ----------
    shape
        Window shape (ny, nx).
    cte_trail
        float (ny, nx), net non-CR charge CTE moved into each pixel, electrons.
    hot
        ``(y, x, unflagged)`` of hot/warm pixels (``unflagged`` bool per pixel).
    sink
        ``(y, x)`` of sink pixels and their trails.
    satellite
        float (ny, nx), satellite-trail charge, electrons.
    bad_columns
        bool (ny, nx), bad column segments.
    """
    bits = np.zeros(shape, dtype=np.uint8)
    if cte_trail is not None:
        bits[cte_trail >= ARTEFACT_THRESHOLD_E] |= CTE_TRAIL
    if hot is not None:
        y, x, unflagged = hot
        bits[y, x] |= HOT_PIXEL
        bits[y[unflagged], x[unflagged]] |= UNFLAGGED_HOT
    if sink is not None:
        bits[sink[0], sink[1]] |= SINK
    if satellite is not None:
        bits[satellite >= ARTEFACT_THRESHOLD_E] |= SATELLITE
    if bad_columns is not None:
        bits[bad_columns] |= BAD_COLUMN
    return bits
