"""Valid-pixel mask per chip: where a ground-truth CR label can be trusted.

A pixel is valid when

* its DQ is 0 apart from the CR bits 4096/8192 that are what we are labelling (the deepCR-ACS/WFC
  paper excludes DQ-flagged pixels; hot and warm pixels, bits 16/64, are "good" for drizzle and get
  flagged as CRs by driz_cr when the exposures are dithered),
* at least one *other* exposure of the visit covers it with a pixel drizzle uses (DQ clean apart
  from drizzlepac SVM's ``driz_sep_bits`` 336; driz_cr compares each exposure with the median of
  the others: with fewer than two exposures it cannot work),
* it is not within the 7x7-dilated footprint of a saturated pixel (> ``profile.saturation_e``),
* optionally, it lies more than ``border_px`` pixels from the chip edge (the deepCR-ACS/WFC paper
  discards 128 px).

Coverage is computed from the (aligned) WCS of every chip: this chip's pixel grid is mapped to the
sky and into each other chip on a coarse grid (distortion is smooth) and bilinearly interpolated.
Arrays and WCS objects only: the truth step reads them (:func:`crlib.truth.inputs.read_chip_frames`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crlib.formats.dq import CR_DQ_BITS, DRIZZLE_GOOD_BITS, IGNORED_DQ_BITS, dq_good
from crlib.interpolation import interpolation_matrix
from crlib.metrics.pixels import inside_border
from crlib.profiles import InstrumentProfile
from crlib.truth.dilation import dilate_rectangle

log = logging.getLogger(__name__)

__all__ = [
    "CR_DQ_BITS",
    "DRIZZLE_GOOD_BITS",
    "IGNORED_DQ_BITS",
    "ChipFrame",
    "chip_frame",
    "coverage_count",
    "dq_good",
    "inside_border",
    "saturation_mask",
    "valid_mask",
]

#: Edge of the square kernel that dilates the saturation mask (deepCR-ACS/WFC paper: 7x7).
SATURATION_DILATION = 7

#: Spacing of the coarse grid on which WCS mappings are evaluated, pixels.
COARSE_STEP = 32


@dataclass(frozen=True, slots=True)
class ChipFrame:
    """One chip of one exposure: its WCS, size and DQ-good pixels.

    Attributes
    ----------
    rootname, sci_extver
        Which chip.
    wcs
        The chip's full (distortion-including) WCS, e.g. ``stwcs.wcsutil.HSTWCS``.
    shape
        ``(ny, nx)`` pixels.
    good
        bool (ny, nx): pixels drizzle uses (DQ clean apart from :data:`IGNORED_DQ_BITS`).
    clean
        bool (ny, nx): pixels with no DQ flag apart from the CR bits.
    """

    rootname: str
    sci_extver: int
    wcs: object
    shape: tuple[int, int]
    good: np.ndarray
    clean: np.ndarray


def saturation_mask(sci: np.ndarray, *, level_e: float, size: int = SATURATION_DILATION) -> np.ndarray:
    """bool array: pixels above ``level_e`` electrons, dilated with a ``size`` x ``size`` square."""
    saturated = np.asarray(sci) > level_e
    if not saturated.any():
        return saturated
    return dilate_rectangle(saturated, (size, size))


def chip_frame(
    rootname: str, sci_extver: int, wcs: object, shape: tuple[int, int], dq: np.ndarray
) -> ChipFrame:
    """One chip's :class:`ChipFrame` from its WCS, size and DQ flags.

    Parameters
    ----------
    rootname, sci_extver
        Which chip.
    wcs
        The chip's full (distortion-including) WCS.
    shape
        ``(ny, nx)`` pixels.
    dq
        int (ny, nx) data-quality flags of the chip.
    """
    return ChipFrame(rootname, sci_extver, wcs, shape, dq_good(dq), dq_good(dq, ignored_bits=CR_DQ_BITS))


def _coarse_map(
    source: ChipFrame, target: ChipFrame, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ny, nx = source.shape
    ynodes = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    xnodes = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    gx, gy = np.meshgrid(xnodes, ynodes)
    ra, dec = source.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)  # type: ignore[attr-defined]
    tx, ty = target.wcs.all_world2pix(ra, dec, 0, quiet=True)  # type: ignore[attr-defined]
    return ynodes, xnodes, np.asarray(tx), np.asarray(ty)


def _lands_on(tx: np.ndarray, ty: np.ndarray, target: ChipFrame, step: int) -> bool:
    ny, nx = target.shape
    return bool(np.any((tx > -step) & (tx < nx + step) & (ty > -step) & (ty < ny + step)))


def overlaps(source: ChipFrame, target: ChipFrame, *, step: int = COARSE_STEP) -> bool:
    """Whether any coarse-grid pixel of ``source`` lands within ``step`` pixels of ``target``."""
    _, _, tx, ty = _coarse_map(source, target, step)
    return _lands_on(tx, ty, target, step)


def _interpolate(
    shape: tuple[int, int], coarse: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    ynodes, xnodes, tx, ty = coarse
    wy = interpolation_matrix(ynodes, ny)
    wx = interpolation_matrix(xnodes, nx)
    x = wy @ tx.reshape(len(ynodes), len(xnodes)) @ wx.T
    y = wy @ ty.reshape(len(ynodes), len(xnodes)) @ wx.T
    return x, y


#: One other exposure's chips that reach a chip, each with its coarse pixel map (:func:`_coarse_map`).
CoverageMaps = list[list[tuple[ChipFrame, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]]


def coverage_maps(frame: ChipFrame, others: Sequence[ChipFrame], *, step: int = COARSE_STEP) -> CoverageMaps:
    """The WCS half of :func:`coverage_count`: where ``frame``'s coarse grid lands on each other chip.

    Calls the chips' WCS objects (wcslib), which are not safe to call from several threads; the
    pixel half, :func:`coverage_from_maps`, is.

    Returns
    -------
    list
        Per other exposure, ``[(chip, coarse map)]`` of its chips that ``frame`` reaches.
    """
    by_exposure: dict[str, list[ChipFrame]] = {}
    for other in others:
        if other.rootname != frame.rootname:
            by_exposure.setdefault(other.rootname, []).append(other)
    maps: CoverageMaps = []
    for chips in by_exposure.values():
        reached = []
        for other in chips:
            coarse = _coarse_map(frame, other, step)  # one WCS mapping for the test and the map
            if _lands_on(coarse[2], coarse[3], other, step):
                reached.append((other, coarse))
        maps.append(reached)
    return maps


def coverage_from_maps(shape: tuple[int, int], maps: CoverageMaps) -> np.ndarray:
    """The pixel half of :func:`coverage_count`: other exposures covering each pixel, uint8 (ny, nx).

    Numpy only (no WCS call): safe to run for several chips in threads.
    """
    count = np.zeros(shape, dtype=np.uint8)
    for reached in maps:
        covered = np.zeros(shape, dtype=bool)
        for other, coarse in reached:
            x, y = _interpolate(shape, coarse)
            xi = np.rint(x, out=x).astype(np.int32)
            yi = np.rint(y, out=y).astype(np.int32)
            other_ny, other_nx = other.shape
            inside = (xi >= 0) & (xi < other_nx) & (yi >= 0) & (yi < other_ny)
            # gather every pixel at a clipped index (no compaction by ``inside``), then keep the inside
            np.clip(xi, 0, other_nx - 1, out=xi)
            np.clip(yi, 0, other_ny - 1, out=yi)
            yi *= other_nx
            yi += xi
            covered |= inside & np.take(other.good.reshape(-1), yi)
        count += covered.astype(np.uint8)
    return count


def coverage_count(frame: ChipFrame, others: Sequence[ChipFrame], *, step: int = COARSE_STEP) -> np.ndarray:
    """Number of *other exposures* that cover each pixel of ``frame`` with a DQ-good pixel.

    Parameters
    ----------
    frame
        The chip whose pixels are counted.
    others
        Chips of the visit's other exposures (any chip of an exposure may overlap).

    Returns
    -------
    numpy.ndarray
        uint8 (ny, nx).
    """
    return coverage_from_maps(frame.shape, coverage_maps(frame, others, step=step))


def valid_mask(
    sci: np.ndarray,
    frame: ChipFrame,
    others: Sequence[ChipFrame],
    *,
    profile: InstrumentProfile,
    min_exposures: int = 2,
    border_px: int = 0,
    coverage: np.ndarray | None = None,
) -> np.ndarray:
    """Valid-pixel mask of one chip.

    Parameters
    ----------
    sci
        float (ny, nx) science array, electrons (for the saturation mask).
    frame
        This chip (WCS and DQ flags; its own pixels must be free of any non-CR DQ flag).
    others
        Chips of the other exposures of the visit.
    profile
        Supplies the saturation level.
    min_exposures
        Exposures (including this one) that must cover a pixel.
    border_px
        Pixels discarded along every chip edge (0: none; the paper uses 128).
    coverage
        :func:`coverage_count` of this chip if already computed (e.g. in the thread that owns the
        WCS objects); computed here otherwise.

    Returns
    -------
    numpy.ndarray
        uint8 (ny, nx), 1 = valid.
    """
    valid = frame.clean.copy()
    valid &= ~saturation_mask(sci, level_e=profile.saturation_e)
    if min_exposures > 1:
        counts = coverage if coverage is not None else coverage_count(frame, others)
        valid &= counts >= (min_exposures - 1)
    if border_px > 0:
        valid &= inside_border(valid.shape, border_px)
    return valid.astype(np.uint8)
