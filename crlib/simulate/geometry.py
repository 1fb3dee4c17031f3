"""Detector windows, sky rotations of the template WCS, dither patterns.

The real template FLC carries a full distortion model (SIP + D2IM + NPOL lookup tables). A
simulated pointing is a *rigid rotation of the sky* applied to the template's per-chip reference
points and CD matrices, so the focal-plane geometry (chip gap, distortion) stays the real one.

Cropped ("small") files follow the FITS/HST subarray convention
``image_pixel = physical_pixel + LTV`` (so ``LTV = -offset``), with ``CRPIX`` reduced by the
offset and the D2IMARR/WCSDVARR extensions' ``CRVAL`` set to ``-LTV`` exactly as
``stwcs.updatewcs`` writes them for subarrays; the lookup tables then keep indexing the full chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from crlib.profiles import InstrumentProfile

SMALL_WINDOW_SHAPE = (512, 1024)
"""(ny, nx) of each chip in ``size="small"`` files: straddles the amplifier boundary, next to the gap."""

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ChipWindow:
    """The part of a full chip written to a file (0-based full-chip offsets, pixels)."""

    sci_extver: int
    x0: int
    y0: int
    nx: int
    ny: int

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(ny, nx)``."""
        return (self.ny, self.nx)


def chip_windows(profile: InstrumentProfile, size: str) -> tuple[ChipWindow, ...]:
    """Windows for each chip of ``profile`` for ``size`` ``"full"`` or ``"small"``.

    Small windows are ``SMALL_WINDOW_SHAPE`` per chip, centred on the amplifier boundary
    (x = 2048) and adjacent to the inter-chip gap, so both chips' windows are neighbours on the sky
    and every window covers two amplifiers.
    """
    full_ny, full_nx = profile.chip_shape
    if size == "full":
        return tuple(ChipWindow(chip.sci_extver, 0, 0, full_nx, full_ny) for chip in profile.chips)
    ny, nx = SMALL_WINDOW_SHAPE
    x0 = full_nx // 2 - nx // 2
    windows = []
    for chip in profile.chips:
        # ACS/WFC: SCI,1 (WFC2) meets the gap at its top rows, SCI,2 (WFC1) at its bottom rows.
        y0 = full_ny - ny if chip.ccdchip == 2 else 0
        windows.append(ChipWindow(chip.sci_extver, x0, y0, nx, ny))
    return tuple(windows)


def unit_vector(ra_deg: float | FloatArray, dec_deg: float | FloatArray) -> FloatArray:
    """Unit vectors (…, 3) for sky positions in degrees."""
    ra = np.radians(ra_deg)
    dec = np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def radec(vector: FloatArray) -> tuple[float, float]:
    """RA, Dec in degrees of a 3-vector."""
    x, y, z = (float(c) for c in vector / np.linalg.norm(vector))
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.asin(max(-1.0, min(1.0, z))))


def rotation_between(a: FloatArray, b: FloatArray) -> FloatArray:
    """Rotation matrix (3, 3) taking unit vector ``a`` to ``b`` along their great circle."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin = float(np.linalg.norm(axis))
    cos = float(np.dot(a, b))
    if sin < 1e-15:
        return np.eye(3)
    return rotation_about(axis / sin, math.atan2(sin, cos))


def rotation_about(axis: FloatArray, angle_rad: float) -> FloatArray:
    """Right-handed rotation matrix (3, 3) by ``angle_rad`` about unit ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * cross + (1.0 - math.cos(angle_rad)) * (cross @ cross)


def _east_north(ra_deg: float, dec_deg: float) -> tuple[FloatArray, FloatArray]:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    east = np.array([-math.sin(ra), math.cos(ra), 0.0])
    north = np.array([-math.sin(dec) * math.cos(ra), -math.sin(dec) * math.sin(ra), math.cos(dec)])
    return east, north


def rotate_chip_wcs(
    crval: tuple[float, float], cd: FloatArray, rotation: FloatArray
) -> tuple[tuple[float, float], FloatArray]:
    """Apply a sky rotation to one chip's tangent point and CD matrix.

    Parameters
    ----------
    crval
        ``(CRVAL1, CRVAL2)`` in degrees.
    cd
        CD matrix (2, 2), degrees per pixel, intermediate axes (east, north).
    rotation
        Sky rotation matrix (3, 3).

    Returns
    -------
    tuple
        New ``(CRVAL1, CRVAL2)`` and CD matrix, such that every pixel maps to the rotated image of
        the sky position it mapped to before (to first order in the pixel offset from CRPIX; the
        projection is re-centred exactly at the new tangent point).
    """
    old = unit_vector(*crval)
    new_ra, new_dec = radec(rotation @ old)
    east, north = _east_north(*crval)
    new_east, new_north = _east_north(new_ra, new_dec)
    rotated_east, rotated_north = rotation @ east, rotation @ north
    basis_change = np.array(
        [
            [rotated_east @ new_east, rotated_north @ new_east],
            [rotated_east @ new_north, rotated_north @ new_north],
        ]
    )
    return (new_ra, new_dec), basis_change @ cd


def header_crval_cd(header: fits.Header) -> tuple[tuple[float, float], FloatArray]:
    """``(CRVAL1, CRVAL2)`` and CD matrix of a SCI header."""
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]], dtype=float)
    return (float(header["CRVAL1"]), float(header["CRVAL2"])), cd


def set_crval_cd(header: fits.Header, crval: tuple[float, float], cd: FloatArray) -> None:
    """Write ``CRVAL1/2`` and ``CD1_1..CD2_2`` into ``header``."""
    header["CRVAL1"], header["CRVAL2"] = crval
    header["CD1_1"], header["CD1_2"] = float(cd[0, 0]), float(cd[0, 1])
    header["CD2_1"], header["CD2_2"] = float(cd[1, 0]), float(cd[1, 1])


def orientat_deg(cd: FloatArray) -> float:
    """Position angle of the image +y axis, degrees east of north (the ``ORIENTAT`` keyword)."""
    return math.degrees(math.atan2(cd[0, 1], cd[1, 1])) % 360.0


#: Dither offsets in pixels along detector (x, y), half-pixel phases, approximating the standard
#: ACS-WFC-DITHER-LINE (2 points) and ACS-WFC-DITHER-BOX (4 points) patterns.
DITHER_LINE_PX = ((0.0, 0.0), (2.5, 1.5), (5.0, 3.0))
DITHER_BOX_PX = ((0.0, 0.0), (5.0, 1.5), (2.5, 4.0), (-2.5, 2.5))
DITHER_BOX_REPEAT_PX = (1.25, 0.75)


#: Pattern name of an undithered visit: every exposure at the same commanded pointing.
CR_SPLIT = "NONE (CR-SPLIT)"

#: ``dither`` choices of the simulator: the standard pattern for the exposure count, or none.
DITHER_CHOICES = ("pattern", "none")


def dither_pattern(n_exposures: int, *, dither: str = "pattern") -> tuple[str, list[tuple[float, float]]]:
    """Pattern name and per-exposure offsets (pixels) for a visit of ``n_exposures``.

    ``dither="pattern"``: 1–3 exposures LINE; 4 BOX; 5–8 BOX, then the BOX again shifted by a
    quarter-pixel phase ``DITHER_BOX_REPEAT_PX``. ``dither="none"``: a CR-SPLIT-like visit, every
    offset (0, 0).
    """
    if dither == "none":
        return CR_SPLIT, [(0.0, 0.0)] * n_exposures
    if dither != "pattern":
        raise ValueError(f"dither must be one of {DITHER_CHOICES} (got {dither!r})")
    if n_exposures <= len(DITHER_LINE_PX):
        return "ACS-WFC-DITHER-LINE", list(DITHER_LINE_PX[:n_exposures])
    offsets = []
    for index in range(n_exposures):
        repeat, point = divmod(index, len(DITHER_BOX_PX))
        base = DITHER_BOX_PX[point]
        offsets.append(
            (base[0] + repeat * DITHER_BOX_REPEAT_PX[0], base[1] + repeat * DITHER_BOX_REPEAT_PX[1])
        )
    return "ACS-WFC-DITHER-BOX", offsets
