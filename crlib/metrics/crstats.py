"""Cosmic-ray statistics of a chip from its truth mask: pixels, events, rate per cm² per second.

The area behind a rate is the chip's *real* area: the pixels of the mask the truth file holds
(a full-frame ACS/WFC chip has 2048 x 4096, a ``WFC1-512`` subarray 512 x 512) times the pixel
area of the profile (15 µm pixels for ACS/WFC and WFC3/UVIS: 2.25e-6 cm²), restricted to the
valid pixels when the truth has a ``VALID`` plane. It is never taken from the profile's
full-frame chip shape, so subarrays get their true rates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.records import CrStatistics


def count_cr_events(mask: np.ndarray) -> int:
    """Number of CR events: 8-connected components of the mask (a diagonal track is one event)."""
    from scipy.ndimage import label

    _, count = label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    return int(count)


def chip_area_cm2(pixels: int, *, profile: InstrumentProfile) -> float:
    """Detector area of ``pixels`` pixels in cm²: ``pixels`` x (pixel pitch)².

    Parameters
    ----------
    pixels
        Pixel count, e.g. ``ny * nx`` of a chip as the file holds it, or its valid pixels.
    profile
        Gives the pixel pitch (``pixel_size_um``: 15 µm for ACS/WFC).

    Returns
    -------
    float
        Area in cm² (a 512x512 ACS/WFC subarray: 0.590 cm²; a 2048x4096 chip: 18.87 cm²).
    """
    if pixels < 0:
        raise ValueError(f"pixel count must not be negative, got {pixels}")
    return float(pixels) * profile.pixel_area_cm2


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
        ``(ny, nx)`` truth CR mask, nonzero = CR, of the chip as the file holds it (any shape).
    rootname, chip
        Exposure id and chip number (SCI EXTVER).
    exptime_s
        Exposure time in seconds (> 0).
    profile
        Gives the pixel area.
    valid
        Optional ``(ny, nx)`` valid-pixel mask; the rate is per valid area (events touching only
        invalid pixels are not counted).

    Returns
    -------
    CrStatistics
        ``rate_per_cm2_s`` = events / :func:`chip_area_cm2` (valid pixels, else all pixels of
        ``mask``) / exposure time [s].

    Raises
    ------
    ValueError
        For a non-positive exposure time, ``valid`` of another shape, or an empty valid area.
    """
    if not exptime_s > 0:
        raise ValueError(f"{rootname} chip {chip}: exposure time must be positive, got {exptime_s}")
    cr = np.asarray(mask, dtype=bool)
    area_pixels = cr.size
    if valid is not None:
        valid_b = np.asarray(valid, dtype=bool)
        if valid_b.shape != cr.shape:
            raise ValueError(
                f"{rootname} chip {chip}: valid mask {valid_b.shape} and CR mask {cr.shape} differ in shape"
            )
        cr = cr & valid_b
        area_pixels = int(np.count_nonzero(valid_b))
    if area_pixels == 0:
        raise ValueError(f"{rootname} chip {chip}: no valid pixels")
    events = count_cr_events(cr)
    rate = events / chip_area_cm2(area_pixels, profile=profile) / exptime_s
    return CrStatistics(
        rootname=rootname,
        chip=chip,
        cr_pixels=int(np.count_nonzero(cr)),
        cr_events=events,
        exptime_s=float(exptime_s),
        rate_per_cm2_s=float(rate),
    )


def truth_cr_statistics(
    truth: Path, *, rootname: str, exptime_s: float, profile: InstrumentProfile
) -> list[CrStatistics]:
    """:func:`cr_statistics` of every chip a truth file holds (one for a one-chip subarray).

    Parameters
    ----------
    truth
        ``<root>_crtruth.fits`` (``CRMASK`` + ``VALID`` per chip) or ``<root>_simtruth.fits``.
    rootname
        Exposure id.
    exptime_s
        Exposure time, seconds (> 0).
    profile
        Gives the pixel area.

    Returns
    -------
    list of CrStatistics
        One per chip in EXTVER order; each rate is per that chip's own valid area.

    Raises
    ------
    InputDataError
        Unreadable truth file (see :func:`crlib.metrics.scoring.read_truth`).
    ValueError
        Non-positive exposure time or a chip without valid pixels.
    """
    from crlib.metrics.scoring import read_truth

    return [
        cr_statistics(mask, rootname=rootname, chip=extver, exptime_s=exptime_s, profile=profile, valid=valid)
        for extver, (mask, valid) in sorted(read_truth(Path(truth)).items())
    ]
