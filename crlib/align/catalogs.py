"""Per-exposure, per-chip source catalogs for alignment (photutils on DQ-good pixels).

Cosmic rays are the main contaminant of single-exposure catalogs; they are rejected three ways:
pixels the archive already flagged as CRs (DQ 4096/8192) are masked, DAOStarFinder's sharpness
and roundness bounds (CR hits are sharper than the PSF and often elongated), and a size test (a
star lights up several pixels around its peak, many CRs fewer). What is left is matched between
exposures, where CRs find no partner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError
from crlib.formats.exposures import check_chip_pixels
from crlib.profiles import InstrumentProfile

log = logging.getLogger(__name__)

#: drizzlepac SVM's catalog PSF FWHM for ACS/WFC, arcsec (``fwhmpsf`` in the alignment JSON).
DEFAULT_FWHM_ARCSEC = 0.13


class SourceFindingError(ValueError):
    """photutils refused a chip's pixels (e.g. too few unmasked pixels in every background box)."""


@dataclass(frozen=True, slots=True)
class CatalogOptions:
    """Source-finding options.

    Attributes
    ----------
    nsigma
        Detection threshold above the local background, in background-RMS units (DAOStarFinder's
        ``threshold``, the amplitude of the fitted PSF-size Gaussian). Measured on pure Gaussian
        noise, a 1024x512 chip gives ~400 "sources" at 3, 9 at 4 and none at 5: at 3 (drizzlepac
        SVM's ``nsigma``, which it applies to a segmentation image instead) noise peaks outnumber
        the real sources of a sparse field and drag its relative fit to 0.7-1.1 px rms.
    max_sources
        Keep at most this many brightest sources per chip (drizzlepac SVM: 500).
    sharpness_range, roundness_range
        DAOStarFinder bounds; CR hits fall above the sharpness upper bound.
    min_pixels
        Minimum pixels above half the peak height within a 5x5 box around the peak.
    refine_min_pixels
        The same minimum for the sources the refinement pass may also use (``npix`` column; see
        :func:`strict_sources`). With drizzlepac's real ACS/WFC PSF (undersampled) a star centred on
        a pixel lights up only 1-2 pixels above half its peak, one centred on a corner 4: the strict
        minimum of 3 keeps stars by sub-pixel phase, whose centroid bias then no longer averages out
        between dithered exposures (0.04-0.05 px of relative error on simulated rich fields).
    background_box
        Box size of the 2-D background estimate, pixels.
    """

    nsigma: float = 5.0
    max_sources: int = 500
    sharpness_range: tuple[float, float] = (0.25, 0.90)
    roundness_range: tuple[float, float] = (-1.0, 1.0)
    min_pixels: int = 3
    refine_min_pixels: int = 2
    background_box: int = 64


def _pixels_above_half_peak(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, background: np.ndarray
) -> np.ndarray:
    ny, nx = data.shape
    xi = np.clip(np.rint(x).astype(int), 2, nx - 3)
    yi = np.clip(np.rint(y).astype(int), 2, ny - 3)
    offsets = np.arange(-2, 3)
    boxes = data[yi[:, None, None] + offsets[None, :, None], xi[:, None, None] + offsets[None, None, :]]
    base = background[yi, xi][:, None, None]
    peak = boxes.max(axis=(1, 2))[:, None, None]
    return ((boxes - base) > 0.5 * (peak - base)).sum(axis=(1, 2))


def find_sources(
    sci: np.ndarray,
    dq: np.ndarray,
    *,
    fwhm_px: float,
    saturation_e: float,
    options: CatalogOptions | None = None,
) -> object:
    """Star-like sources on one chip.

    Parameters
    ----------
    sci
        float (ny, nx) science array, electrons.
    dq
        int (ny, nx) data-quality array; flagged pixels are masked (CR flags included; the bits
        drizzle counts as good, :data:`crlib.formats.dq.DRIZZLE_GOOD_BITS`, are not).
    fwhm_px
        PSF FWHM, pixels.
    saturation_e
        Sources peaking above this are dropped (their centroids are poor).
    options
        Detection options.

    Returns
    -------
    astropy.table.Table
        Columns ``x``, ``y`` (0-based pixels), ``flux``, ``peak``, ``sharpness``, ``roundness1``,
        ``roundness2``, sorted by decreasing flux; possibly empty.

    Raises
    ------
    SourceFindingError
        photutils cannot estimate a background or noise level from these pixels (all or most of
        them masked or non-finite).
    """
    from astropy.table import Table
    from photutils.background import Background2D, MedianBackground
    from photutils.detection import DAOStarFinder

    from crlib.formats.dq import DRIZZLE_GOOD_BITS, dq_good

    opts = options or CatalogOptions()
    data = np.asarray(sci, dtype=np.float32)
    # CR-flagged pixels (DQ 4096 from the archive's own AstroDrizzle run, 8192 from CR-SPLIT
    # rejection) are masked like any other flag, as drizzlepac's catalogs mask every DQ flag: with
    # drizzlepac's sharp ACS/WFC PSFs a CR hit is as compact as a star, and a sparse field's
    # catalog is otherwise mostly cosmic rays.
    mask = ~dq_good(dq, ignored_bits=DRIZZLE_GOOD_BITS) | ~np.isfinite(data)
    data = np.where(mask, 0.0, data).astype(np.float32)
    box = min(opts.background_box, data.shape[0] // 2, data.shape[1] // 2)
    try:
        background = Background2D(data, box, mask=mask, filter_size=3, bkg_estimator=MedianBackground())
    except ValueError as exc:  # photutils: "All input pixels are masked", too few good pixels per box
        raise SourceFindingError(f"background estimate impossible ({exc})") from exc
    # Background2D interpolates its mesh to full resolution on every property access (~0.3 s per
    # 4096x2048 chip): take the background once, and the noise level from the mesh itself.
    level = np.asarray(background.background, dtype=np.float32)
    # masked pixels sit at the background, not at zero: DAOStarFinder's zero-sum kernel would
    # answer a hole far below the sky with spurious peaks around its edge
    residual = np.where(mask, np.float32(0.0), data - level)
    rms = float(np.median(background.background_rms_mesh))
    if not np.isfinite(rms):
        raise SourceFindingError("background noise level is not finite")
    finder = DAOStarFinder(
        threshold=opts.nsigma * max(rms, 1e-3),
        fwhm=fwhm_px,
        sharpness_range=opts.sharpness_range,
        roundness_range=opts.roundness_range,
        peak_max=saturation_e,
        exclude_border=True,
    )
    try:
        found = finder.find_stars(residual, mask=mask)
    except ValueError as exc:
        raise SourceFindingError(f"source detection impossible ({exc})") from exc
    empty = Table(
        names=("x", "y", "flux", "peak", "sharpness", "roundness1", "roundness2", "npix"), dtype=[float] * 8
    )
    if found is None or len(found) == 0:
        return empty
    x = np.asarray(found["x_centroid"], dtype=float)
    y = np.asarray(found["y_centroid"], dtype=float)
    npix = _pixels_above_half_peak(data, x, y, level)
    keep = npix >= min(opts.min_pixels, opts.refine_min_pixels)
    table = Table(
        {
            "x": x[keep],
            "y": y[keep],
            "flux": np.asarray(found["flux"], dtype=float)[keep],
            "peak": np.asarray(found["peak"], dtype=float)[keep],
            "sharpness": np.asarray(found["sharpness"], dtype=float)[keep],
            "roundness1": np.asarray(found["roundness1"], dtype=float)[keep],
            "roundness2": np.asarray(found["roundness2"], dtype=float)[keep],
            "npix": npix[keep].astype(float),
        }
    )
    table.sort("flux", reverse=True)
    strict = table["npix"] >= opts.min_pixels
    log.debug("%d sources (%d rejected as CR-like by size)", int(strict.sum()), int((~keep).sum()))
    # the brightest max_sources of the strict set, and of the looser set for the refinement pass
    rank_strict = np.cumsum(strict) - 1
    rank_all = np.arange(len(table))
    chosen = (strict & (rank_strict < opts.max_sources)) | (rank_all < opts.max_sources)
    return table[chosen]


def strict_sources(catalog: Any, options: CatalogOptions | None = None) -> Any:
    """The sources of a :func:`find_sources` catalog that pass the strict size test (``min_pixels``)."""
    opts = options or CatalogOptions()
    if "npix" not in catalog.colnames:
        return catalog
    return catalog[np.asarray(catalog["npix"]) >= opts.min_pixels][: opts.max_sources]


def chip_catalog(
    path: Path,
    extver: int,
    sci: np.ndarray,
    dq: np.ndarray,
    *,
    profile: InstrumentProfile,
    options: CatalogOptions | None = None,
) -> object:
    """Source catalog of one chip whose pixels pass :func:`~crlib.formats.exposures.check_chip_pixels`.

    Parameters
    ----------
    path
        The exposure file (named in errors only; nothing is read here).
    extver
        SCI EXTVER of the chip (named in errors).
    sci
        float (ny, nx) science array, electrons.
    dq
        int (ny, nx) data-quality array.
    profile
        Instrument profile (plate scale for the PSF FWHM in pixels, saturation level in electrons).
    options
        Detection options.

    Returns
    -------
    astropy.table.Table
        As :func:`find_sources`.

    Raises
    ------
    InputDataError
        The chip fails :func:`~crlib.formats.exposures.check_chip_pixels` (all-NaN, mostly NaN,
        constant), or photutils refuses its pixels; names file and chip.
    """
    fwhm_px = DEFAULT_FWHM_ARCSEC / profile.plate_scale_arcsec
    check_chip_pixels(path, extver, sci, dq)
    try:
        return find_sources(sci, dq, fwhm_px=fwhm_px, saturation_e=profile.saturation_e, options=options)
    except SourceFindingError as exc:
        raise InputDataError(
            path, f"SCI,{extver}: {exc}: source catalog impossible", fix="download it again"
        ) from exc
