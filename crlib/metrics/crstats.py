"""Cosmic-ray statistics of a chip from its truth mask: pixels, events, rate per cm² per second."""

from __future__ import annotations

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.records import CrStatistics


def count_cr_events(mask: np.ndarray) -> int:
    """Number of CR events: 8-connected components of the mask (a diagonal track is one event)."""
    from scipy.ndimage import label

    _, count = label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    return int(count)


def cr_statistics(
    mask: np.ndarray,
    *,
    rootname: str,
    chip: int,
    exptime_s: float,
    profile: InstrumentProfile,
    valid: np.ndarray | None = None,
) -> CrStatistics:
    """CR pixels, events and event rate of one chip.

    Parameters
    ----------
    mask
        ``(ny, nx)`` truth CR mask, nonzero = CR.
    rootname, chip
        Exposure id and chip number (SCI EXTVER).
    exptime_s
        Exposure time in seconds (> 0).
    profile
        Gives the pixel area.
    valid
        Optional valid-pixel mask; the rate is per valid area (events touching only invalid pixels
        are not counted).

    Returns
    -------
    CrStatistics
        ``rate_per_cm2_s`` = events / (valid pixels x pixel area [cm²]) / exposure time [s].

    Raises
    ------
    ValueError
        For a non-positive exposure time or an empty valid area.
    """
    if not exptime_s > 0:
        raise ValueError(f"{rootname} chip {chip}: exposure time must be positive, got {exptime_s}")
    cr = np.asarray(mask, dtype=bool)
    area_pixels = cr.size
    if valid is not None:
        valid_b = np.asarray(valid, dtype=bool)
        cr = cr & valid_b
        area_pixels = int(np.count_nonzero(valid_b))
    if area_pixels == 0:
        raise ValueError(f"{rootname} chip {chip}: no valid pixels")
    events = count_cr_events(cr)
    rate = events / (area_pixels * profile.pixel_area_cm2) / exptime_s
    return CrStatistics(
        rootname=rootname,
        chip=chip,
        cr_pixels=int(np.count_nonzero(cr)),
        cr_events=events,
        exptime_s=float(exptime_s),
        rate_per_cm2_s=float(rate),
    )
