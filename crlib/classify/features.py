"""CR-robust pixel statistics of an exposure: PSF-like point-source density and extended light.

The measurements behind :mod:`crlib.classify.image` (all chips of an exposure together):

* **Point-source density** (sources per 10^6 pixels): local maxima of the background-subtracted
  image smoothed with a 1-pixel Gaussian, at least ``nsigma`` above the local noise, kept only when
  their light is *PSF-like*: Gaussian-weighted second moments in a 7x7 stamp give a minor-axis
  width of at least ``min_minor_fwhm`` x FWHM (a cosmic ray or hot pixel is sharper than the PSF),
  a mean width of at most ``max_size_fwhm`` x FWHM (no galaxies, no saturated stars) and an
  elongation of at most ``max_elongation`` (no CR tracks). A single ACS/WFC frame of 500 s holds
  ~1300 CR events per 10^6 pixels; the cut keeps 10-12 % of the CR peaks and 94-99 % of the star
  peaks rendered with drizzlepac's real ACS/WFC PSFs (extended galaxies are dropped on purpose),
  measured on simulated frames against their CR truth. The density is quoted for the whole
  exposure and for its densest ``PEAK_AREA_PX`` (so a cluster core that fills a corner of a full
  frame still reads as dense).
* **Extended light**: a background map (median of ``TILE_PX`` x ``TILE_PX`` tiles, 3x3-tile median
  filtered, so point sources and CRs do not move it); the *sky* is the 5th percentile of the tile
  levels; the extended fraction (and area) is that of the tiles brighter than sky +
  ``extended_sigma`` x the per-pixel sky noise: the faintest tiles' spread, or, where few point
  sources are resolved (``grains_below_per_mpx``), the shot noise of the sky level when that is
  lower (a field inside a galaxy's disk is grainy with its unresolved stars, and the grains widen
  the spread; in a crowded star field the resolved stars do, and the spread is kept).
* **Saturated stars**: connected groups of saturated pixels (DQ 256, or pixels above
  ``saturation_e`` without DQ) per 10^6 pixels in the same densest ``PEAK_AREA_PX``.

Everything here takes numpy arrays (no file I/O). Several exposures of one visit are combined by
the median of their features (:func:`combine_features`): each exposure has its own cosmic rays,
and the median also ignores one frame spoiled by a satellite trail or a CR shower. Dithered frames
are *not* stacked pixel by pixel: without resampling a median stack would smear the stars.
The tile-grid background is :mod:`crlib.classify.background`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from crlib.classify.background import TILE_PX, FloatArray, background_map, pad_to, tile_quantiles, upsample

log = logging.getLogger(__name__)

#: Blocks in which point sources are counted, pixels on a side.
BLOCK_PX = 256
#: Area over which the peak point-source density is averaged (four 256x256 blocks), pixels.
PEAK_AREA_PX = 4 * BLOCK_PX * BLOCK_PX
#: DQ bits whose pixels are ignored: detector defects, hot/warm pixels, bad columns, CR flags.
#: Saturation (256, 2048) is kept: saturated stars are real sources.
BAD_DQ_BITS = 1 | 2 | 4 | 8 | 16 | 32 | 64 | 128 | 512 | 1024 | 4096 | 8192
#: DQ bit of full-well saturation.
DQ_SATURATED = 256
#: Peak point-source density (per 10^6 px) of a globular cluster: the image classifier's
#: ``dense_per_mpx`` and the density below which a wide sky spread is read as grains.
CLUSTER_DENSITY_PER_MPX = 1500.0
#: Read noise (e-) in the shot-noise floor of the extended-light test (ACS/WFC 4-5 e-, WFC3/UVIS 3).
SHOT_NOISE_READ_NOISE_E = 3.0
#: Smallest usable exposure (valid pixels).
MIN_VALID_PX = 128 * 128


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """How point sources, extended light and saturated stars are measured.

    Attributes
    ----------
    psf_fwhm_px
        PSF FWHM in pixels (ACS/WFC ≈ 2 px at 0.05"/px in the optical; WFC3/UVIS ≈ 1.8 px).
    nsigma
        Detection threshold on the 1-pixel-Gaussian smoothed image, in units of its local noise.
    min_minor_fwhm, max_size_fwhm
        PSF-likeness: Gaussian-weighted minor-axis width at least, and mean width at most, these
        multiples of the FWHM. CR peaks measure ≈ 0.25 FWHM (median; 90 % below 0.33). Stars
        measure ≈ 0.43 FWHM with a Moffat PSF but only 0.33–0.35 (median) with drizzlepac's real
        per-filter ACS/WFC PSFs, which are sharper and undersampled: the minimum is the 5th
        percentile of real-PSF star peaks in the bluest filter (F435W 0.324, F606W 0.323, F814W
        0.341), rounded down to 0.32. It was 0.36, fitted to Moffat stars, which dropped half the
        real-PSF stars (see ``docs/field_types.md``).
    max_elongation
        PSF-likeness: ``(l1 - l2) / (l1 + l2)`` of the second-moment eigenvalues at most this.
    extended_sigma
        A tile is *extended light* when its level exceeds the sky by this many per-pixel sky sigmas.
    grains_below_per_mpx
        Below this peak point-source density (per 10^6 px; the image classifier's cluster density)
        the faintest tiles' spread in excess of their shot noise is read as the grains of
        unresolved stars and the extended-light test uses the shot noise; at or above it the
        excess is the resolved stars' and the spread is used.
    saturation_e
        Without DQ arrays, pixels at or above this level (electrons) count as saturated.
    saturated_min_px
        Smallest connected group of saturated pixels counted as a saturated star.
    """

    psf_fwhm_px: float = 2.0
    nsigma: float = 8.0
    min_minor_fwhm: float = 0.32
    max_size_fwhm: float = 0.65
    max_elongation: float = 0.3
    extended_sigma: float = 1.0
    grains_below_per_mpx: float = CLUSTER_DENSITY_PER_MPX
    saturation_e: float = 70000.0
    saturated_min_px: int = 3


DEFAULT_DETECTION = DetectionSettings()


@dataclass(frozen=True, slots=True)
class ImageFeatures:
    """CR-robust statistics of one exposure (all chips), or the median over a visit's exposures.

    Attributes
    ----------
    valid_px
        Pixels used (finite, DQ-clean).
    sky_e
        Sky level, electrons per pixel (5th percentile of the background tiles).
    sky_sigma_e
        Per-pixel noise at the sky level, electrons.
    point_sources
        PSF-like sources found.
    rejected_peaks
        Peaks above threshold rejected as not PSF-like (mostly cosmic rays).
    point_density
        PSF-like sources per 10^6 valid pixels over the whole exposure.
    point_density_peak
        The same over the densest ``PEAK_AREA_PX`` (blocks of ``BLOCK_PX``).
    extended_fraction
        Fraction of background tiles above sky + ``extended_sigma`` sky sigmas.
    extended_area_mpx
        Area of those tiles, 10^6 pixels.
    saturated_density_peak
        Saturated stars (connected saturated pixels) per 10^6 pixels in the same densest
        ``PEAK_AREA_PX`` (a cluster core's giants saturate; a nearby galaxy's stars do not).
    exposures
        Number of exposures combined (1 for a single exposure).
    """

    valid_px: int
    sky_e: float
    sky_sigma_e: float
    point_sources: int
    rejected_peaks: int
    point_density: float
    point_density_peak: float
    extended_fraction: float
    extended_area_mpx: float
    saturated_density_peak: float
    exposures: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for logs, reasons and JSON)."""
        return asdict(self)

    def describe(self) -> str:
        """Short text of the decisive features."""
        return (
            f"point sources {self.point_density:.0f}/Mpx (peak {self.point_density_peak:.0f}/Mpx), "
            f"extended light in {100 * self.extended_fraction:.0f}% of the field "
            f"({self.extended_area_mpx:.2f} Mpx), "
            f"saturated stars {self.saturated_density_peak:.0f}/Mpx"
        )


# ----------------------------------------------------------------------------- point sources
@dataclass(frozen=True, slots=True)
class Peaks:
    """Local maxima above threshold in one chip and their stamp moments.

    Attributes
    ----------
    y, x
        Pixel positions (0-based), shape (n,).
    size
        Gaussian-weighted mean width ``sqrt((l1 + l2) / 2)``, pixels, shape (n,).
    minor
        Minor-axis width ``sqrt(l2)``, pixels, shape (n,).
    elongation
        ``(l1 - l2) / (l1 + l2)``, shape (n,).
    """

    y: NDArray[np.int64]
    x: NDArray[np.int64]
    size: FloatArray
    minor: FloatArray
    elongation: FloatArray

    def psf_like(self, settings: DetectionSettings) -> NDArray[np.bool_]:
        """bool (n,): peaks whose shape is consistent with the PSF."""
        fwhm = settings.psf_fwhm_px
        return (
            (self.minor >= settings.min_minor_fwhm * fwhm)
            & (self.size <= settings.max_size_fwhm * fwhm)
            & (self.elongation <= settings.max_elongation)
        )


def stamp_moments(
    residual: FloatArray, y: NDArray[np.int64], x: NDArray[np.int64], *, weight_sigma_px: float, half: int = 3
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Gaussian-weighted second moments of ``(2 half + 1)^2`` stamps centred on ``(y, x)``.

    Parameters
    ----------
    residual
        (ny, nx) background-subtracted image, electrons; negative pixels count as zero.
    y, x
        Stamp centres, at least ``half`` pixels from every edge, shape (n,).
    weight_sigma_px
        Sigma of the Gaussian weight, pixels.
    half
        Stamp half-width, pixels.

    Returns
    -------
    size, minor, elongation
        Shape (n,) each (see :class:`Peaks`).
    """
    offsets = np.arange(-half, half + 1)
    stamps = np.clip(residual[y[:, None, None] + offsets[None, :, None], x[:, None, None] + offsets], 0, None)
    dy = offsets[None, :, None].astype(np.float64)
    dx = offsets[None, None, :].astype(np.float64)
    weighted = stamps * np.exp(-(dx**2 + dy**2) / (2.0 * weight_sigma_px**2))
    total = weighted.sum(axis=(1, 2)) + 1e-12
    cx = (weighted * dx).sum(axis=(1, 2)) / total
    cy = (weighted * dy).sum(axis=(1, 2)) / total
    ddx, ddy = dx - cx[:, None, None], dy - cy[:, None, None]
    ixx = (weighted * ddx**2).sum(axis=(1, 2)) / total
    iyy = (weighted * ddy**2).sum(axis=(1, 2)) / total
    ixy = (weighted * ddx * ddy).sum(axis=(1, 2)) / total
    half_trace = (ixx + iyy) / 2.0
    spread = np.sqrt(((ixx - iyy) / 2.0) ** 2 + ixy**2)
    major_sq, minor_sq = half_trace + spread, np.clip(half_trace - spread, 0.0, None)
    elongation = (major_sq - minor_sq) / np.maximum(major_sq + minor_sq, 1e-12)
    return np.sqrt(np.clip(half_trace, 0.0, None)), np.sqrt(minor_sq), elongation


def find_peaks(
    residual: FloatArray,
    smooth: FloatArray,
    noise: FloatArray,
    valid: NDArray[np.bool_],
    *,
    settings: DetectionSettings = DEFAULT_DETECTION,
) -> Peaks:
    """Local maxima of the smoothed residual above ``nsigma`` x local noise, with stamp moments.

    Parameters
    ----------
    residual
        (ny, nx) background-subtracted image (invalid pixels already zero), electrons.
    smooth
        ``residual`` smoothed with a 1-pixel Gaussian.
    noise
        (ny, nx) local noise of the 1-pixel-Gaussian smoothed residual, electrons.
    valid
        (ny, nx) bool.
    settings
        Detection settings.

    Returns
    -------
    Peaks
    """
    is_peak = (smooth == ndimage.maximum_filter(smooth, size=5, mode="nearest")) & valid
    is_peak &= smooth > settings.nsigma * noise
    half = 3
    is_peak[:half], is_peak[-half:], is_peak[:, :half], is_peak[:, -half:] = False, False, False, False
    y, x = np.nonzero(is_peak)
    size, minor, elongation = stamp_moments(
        residual, y, x, weight_sigma_px=0.75 * settings.psf_fwhm_px, half=half
    )
    return Peaks(y=y, x=x, size=size, minor=minor, elongation=elongation)


# ----------------------------------------------------------------------------- features
@dataclass(frozen=True, slots=True)
class _Chip:
    level: FloatArray  # (gy, gx) background tiles, e-
    sigma: FloatArray  # (gy, gx) per-pixel noise tiles, e-
    tile_valid: NDArray[np.int64]  # (gy, gx) valid pixels per tile
    block_counts: FloatArray  # (by, bx) PSF-like sources per block
    block_valid: FloatArray  # (by, bx) valid pixels per block
    block_saturated: FloatArray  # (by, bx) saturated stars per block
    sources: int
    rejected: int
    valid_px: int


def _block_sum(mask: NDArray[np.bool_], block: int) -> FloatArray:
    ny, nx = mask.shape
    by, bx = -(-ny // block), -(-nx // block)
    padded = pad_to(mask.astype(np.float64), (by * block, bx * block), 0.0)
    return padded.reshape(by, block, bx, block).sum(axis=(1, 3))


def saturated_stars(
    saturated: NDArray[np.bool_], *, min_px: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Centres (y, x) of connected groups of at least ``min_px`` saturated pixels (8-connected)."""
    labels, count = ndimage.label(saturated, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = np.nonzero(sizes >= min_px)[0] + 1
    if keep.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    centres = ndimage.center_of_mass(saturated, labels, keep)
    ys = np.array([int(c[0]) for c in centres], dtype=np.int64)
    xs = np.array([int(c[1]) for c in centres], dtype=np.int64)
    return ys, xs


def point_source_peaks(
    image: FloatArray,
    valid: NDArray[np.bool_],
    *,
    settings: DetectionSettings = DEFAULT_DETECTION,
) -> tuple[Peaks, NDArray[np.bool_], FloatArray, FloatArray, NDArray[np.int64]]:
    """Background map, peaks above threshold and which of them are PSF-like, for one chip.

    Parameters
    ----------
    image
        (ny, nx) science array, electrons.
    valid
        (ny, nx) bool, pixels to use.
    settings
        Detection settings.

    Returns
    -------
    peaks, psf_like
        The peaks and a bool (n,) mask of the PSF-like ones (the rest are mostly cosmic rays).
    level, sigma, tile_valid
        The background tiles (see :func:`background_map`).
    """
    level, sigma, tile_valid = background_map(image, valid)
    sky_tiles = level <= np.nanpercentile(level, 30)
    sky = float(np.nanmedian(level[sky_tiles]))
    sky_sigma = float(np.nanmedian(sigma[sky_tiles]))
    background = upsample(level, image.shape)
    residual = np.where(valid, image - background, 0.0)
    # Noise of the smoothed residual: its lower-half spread in the sky tiles, raised by the shot
    # noise (in electrons) of any extended light above the sky.
    smooth = ndimage.gaussian_filter(residual, 1.0, mode="nearest")
    smooth_sigma = _smoothed_sky_sigma(smooth, valid, sky_tiles)
    excess = np.clip(background - sky, 0.0, None)
    noise = smooth_sigma * np.sqrt(1.0 + excess / max(sky_sigma, 1e-6) ** 2)
    peaks = find_peaks(residual, smooth, noise, valid, settings=settings)
    return peaks, peaks.psf_like(settings), level, sigma, tile_valid


def _chip_statistics(
    image: FloatArray, valid: NDArray[np.bool_], saturated: NDArray[np.bool_], settings: DetectionSettings
) -> _Chip:
    peaks, good, level, sigma, tile_valid = point_source_peaks(image, valid, settings=settings)
    sources = np.zeros(image.shape, dtype=bool)
    sources[peaks.y[good], peaks.x[good]] = True
    sat_y, sat_x = saturated_stars(saturated, min_px=settings.saturated_min_px)
    sat_centres = np.zeros(image.shape, dtype=bool)
    sat_centres[sat_y, sat_x] = True
    return _Chip(
        level=level,
        sigma=sigma,
        tile_valid=tile_valid,
        block_counts=_block_sum(sources, BLOCK_PX),
        block_valid=_block_sum(valid, BLOCK_PX),
        block_saturated=_block_sum(sat_centres, BLOCK_PX),
        sources=int(good.sum()),
        rejected=int((~good).sum()),
        valid_px=int(valid.sum()),
    )


def _smoothed_sky_sigma(smooth: FloatArray, valid: NDArray[np.bool_], sky_tiles: NDArray[np.bool_]) -> float:
    """Lower-half spread of the smoothed residual in the sky tiles (sources only widen the top)."""
    (q25, q50), _ = tile_quantiles(smooth, valid, (0.25, 0.5))
    spread = (q50 - q25) / 0.6745
    value = float(np.nanmedian(spread[sky_tiles])) if np.isfinite(spread[sky_tiles]).any() else np.nan
    return value if np.isfinite(value) and value > 0 else float(np.nanmedian(spread))


def measure_features(
    chips: Sequence[NDArray[Any]],
    *,
    dq: Sequence[NDArray[Any] | None] | None = None,
    settings: DetectionSettings = DEFAULT_DETECTION,
) -> ImageFeatures:
    """Point-source density and extended-light statistics of one exposure.

    Parameters
    ----------
    chips
        Science arrays of the exposure's chips, each (ny, nx), electrons (any layout: full
        chips, subarrays, one or two chips).
    dq
        Matching DQ arrays (int, same shapes), or ``None``: pixels with any of
        :data:`BAD_DQ_BITS` are ignored.
    settings
        Detection settings.

    Returns
    -------
    ImageFeatures

    Raises
    ------
    ValueError
        If no chip is given or a DQ array's shape differs from its chip's.
    """
    if not chips:
        raise ValueError("measure_features needs at least one science array")
    dq_list: Sequence[NDArray[Any] | None] = dq if dq is not None else [None] * len(chips)
    if len(dq_list) != len(chips):
        raise ValueError(f"{len(chips)} science arrays but {len(dq_list)} DQ arrays")
    stats: list[_Chip] = []
    for index, (sci, flags) in enumerate(zip(chips, dq_list, strict=True)):
        image = np.asarray(sci, dtype=np.float64)
        if image.ndim != 2:
            raise ValueError(f"chip {index}: science array must be 2-D (got shape {image.shape})")
        valid = np.isfinite(image)
        if flags is not None:
            if flags.shape != image.shape:
                raise ValueError(f"chip {index}: DQ shape {flags.shape} differs from SCI {image.shape}")
            bits = np.asarray(flags).astype(np.int64)
            valid &= (bits & BAD_DQ_BITS) == 0
            saturated = (bits & DQ_SATURATED) != 0
        else:
            saturated = np.nan_to_num(image, nan=0.0) >= settings.saturation_e
        if valid.sum() < TILE_PX * TILE_PX:
            log.debug("chip %d has only %d valid pixels: skipped", index, int(valid.sum()))
            continue
        stats.append(_chip_statistics(image, valid, saturated, settings))
    valid_px = sum(chip.valid_px for chip in stats)
    if not stats or valid_px == 0:
        return _EMPTY
    levels = np.concatenate([chip.level.ravel() for chip in stats])
    sigmas = np.concatenate([chip.sigma.ravel() for chip in stats])
    tile_px = np.concatenate([chip.tile_valid.ravel() for chip in stats]).astype(np.float64)
    keep = np.isfinite(levels) & np.isfinite(sigmas) & (tile_px > 0)
    levels, sigmas, tile_px = levels[keep], sigmas[keep], tile_px[keep]
    sky = float(np.percentile(levels, 5))
    sky_sigma = float(np.median(sigmas[levels <= np.percentile(levels, 30)]))
    excess = levels - sky
    counts = np.concatenate([chip.block_counts.ravel() for chip in stats])
    block_valid = np.concatenate([chip.block_valid.ravel() for chip in stats])
    saturated = np.concatenate([chip.block_saturated.ravel() for chip in stats])
    usable = block_valid >= 0.25 * BLOCK_PX * BLOCK_PX
    counts, block_valid, saturated = counts[usable], block_valid[usable], saturated[usable]
    peak_blocks = _densest(counts, block_valid)
    peak_density = _density(counts, block_valid, peak_blocks)
    # A field wholly inside a galaxy's disk is grainy (the surface-brightness fluctuations of its
    # unresolved stars), which widens the faintest tiles' spread well beyond their shot noise; where
    # few point sources are resolved, levels are measured against the shot noise of the sky level.
    level_sigma = sky_sigma
    if peak_density < settings.grains_below_per_mpx:
        level_sigma = min(sky_sigma, float(np.sqrt(max(sky, 0.0) + SHOT_NOISE_READ_NOISE_E**2)))
    extended = excess > settings.extended_sigma * level_sigma
    sources = sum(chip.sources for chip in stats)
    return ImageFeatures(
        valid_px=valid_px,
        sky_e=sky,
        sky_sigma_e=sky_sigma,
        point_sources=sources,
        rejected_peaks=sum(chip.rejected for chip in stats),
        point_density=sources / valid_px * 1e6,
        point_density_peak=peak_density,
        extended_fraction=float(tile_px[extended].sum() / tile_px.sum()),
        extended_area_mpx=float(tile_px[extended].sum() / 1e6),
        saturated_density_peak=_density(saturated, block_valid, peak_blocks),
    )


_EMPTY = ImageFeatures(0, np.nan, np.nan, 0, 0, np.nan, np.nan, np.nan, np.nan, np.nan, exposures=0)


def _densest(counts: FloatArray, pixels: FloatArray) -> NDArray[np.int64]:
    """Indices of the densest blocks that together cover ``PEAK_AREA_PX`` (all if fewer)."""
    order = np.argsort(counts / np.maximum(pixels, 1.0))[::-1]
    return order[: int(np.searchsorted(np.cumsum(pixels[order]), PEAK_AREA_PX) + 1)]


def _density(counts: FloatArray, pixels: FloatArray, blocks: NDArray[np.int64]) -> float:
    """Counts per 10^6 pixels over ``blocks``."""
    if blocks.size == 0:
        return np.nan
    return float(counts[blocks].sum() / pixels[blocks].sum() * 1e6)


def combine_features(features: Sequence[ImageFeatures]) -> ImageFeatures:
    """Median of several exposures' features (one visit); counts are summed.

    Exposures without usable pixels are left out; with none left the result is empty (NaN).
    """
    usable = [f for f in features if f.valid_px > 0]
    if not usable:
        return _EMPTY

    def median(name: str) -> float:
        return float(np.median([getattr(f, name) for f in usable]))

    return ImageFeatures(
        valid_px=sum(f.valid_px for f in usable),
        sky_e=median("sky_e"),
        sky_sigma_e=median("sky_sigma_e"),
        point_sources=sum(f.point_sources for f in usable),
        rejected_peaks=sum(f.rejected_peaks for f in usable),
        point_density=median("point_density"),
        point_density_peak=median("point_density_peak"),
        extended_fraction=median("extended_fraction"),
        extended_area_mpx=median("extended_area_mpx"),
        saturated_density_peak=median("saturated_density_peak"),
        exposures=len(usable),
    )
