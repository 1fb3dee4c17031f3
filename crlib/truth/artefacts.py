"""Keep non-CR artefacts that driz_cr (or the multi-frame stack) flags out of the CR truth.

Anything present in one exposure and not in the others looks like a CR to driz_cr. Two artefact
classes are common in the archive and recognisable without a model of the sky:

* **satellite trails** (:func:`find_satellite_trails`): a straight band of flagged pixels far longer
  than any CR track (CR tracks are at most ~60 px on ACS/WFC). We look for it with a Hough
  transform of the flagged pixels (coarse on 4x4 blocks, then refined to 0.01 deg and 1 px), accept
  a line whose flagged pixels stand far above the chance count for that line and extend over at
  least ``min_length_px``, and exclude the band across the whole chip (a satellite crosses the
  field) with a margin of two pixels;
* **hot pixels** (:func:`recurrent_hot_pixels`): a hot or warm pixel missing from the dark reference
  file sits at the same *detector* pixel in every exposure, while the sky moves under it with the
  dither, so driz_cr flags it in each. We call a pixel hot when its mean excess over the CR-free
  model (drizzlepac's blotted median) is >= 4 standard errors and every exposure's excess agrees
  with that mean within 4 sigma (a CR in one exposure, or two CRs of different charge at one
  pixel, do not); pixels up to 3 px along its column that pass the same test at 2 sigma are its
  CTE trail.

Excluded pixels leave the CR mask and the valid mask (neither CR nor trusted background), and are
counted in the truth record (:func:`exclude_artefacts`). Arrays only: the truth step
(:mod:`crlib.truth.visit`) reads the exposures' chips.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crlib.truth.dilation import dilate_rectangle

log = logging.getLogger(__name__)

#: Shortest straight extent (px) of a satellite trail's flagged pixels (CR tracks: <= 60 px).
MIN_TRAIL_LENGTH_PX = 200.0
#: Flagged pixels a trail must add on its line above chance.
MIN_TRAIL_EXCESS = 100.0
#: Significance of that excess over the chance count (Poisson sigmas).
TRAIL_NSIGMA = 8.0
MAX_TRAILS_PER_CHIP = 4
TRAIL_MARGIN_PX = 2.0
#: Length (px) of the segments along a trail that must hold flags.
SEGMENT_PX = 32.0
#: Coarse Hough grid: angle step (deg) and strip width (px); the refinement searches +-0.3 deg.
COARSE_STEP_DEG = 0.5
COARSE_RHO_PX = 12.0
HOT_NSIGMA = 4.0
#: Extra significance asked of the mean over *all* exposures (no exposure left out).
HOT_ALL_EXTRA_SIGMA = 0.5
HOT_TRAIL_NSIGMA = 2.0
HOT_CONSISTENCY_SIGMA = 4.0
HOT_TRAIL_GROW_PX = 3


@dataclass(frozen=True, slots=True)
class Trail:
    """A straight trail found in a chip's CR mask.

    Attributes
    ----------
    angle_deg
        Direction of the normal of the line, degrees (line: ``x cos a + y sin a = rho``).
    rho_px
        Distance of the line from pixel (0, 0), pixels.
    half_width_px
        Half width of the excluded band (includes the margin), pixels.
    length_px
        Extent of the flagged pixels along the line (2nd-98th percentile), pixels.
    flagged_pixels
        Flagged pixels inside the band.
    """

    angle_deg: float
    rho_px: float
    half_width_px: float
    length_px: float
    flagged_pixels: int

    def as_dict(self) -> dict[str, float]:
        """JSON-ready description."""
        return {
            "angle_deg": round(float(self.angle_deg), 3),
            "rho_px": round(float(self.rho_px), 2),
            "half_width_px": round(float(self.half_width_px), 2),
            "length_px": round(float(self.length_px), 1),
            "flagged_pixels": float(self.flagged_pixels),
        }


def _hough(
    ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, thetas: np.ndarray, rho_bin: float, rho_max: float
) -> np.ndarray:
    """Weighted Hough accumulator, shape (len(thetas), n_rho); rho from -rho_max in ``rho_bin`` steps."""
    n_rho = math.ceil(2 * rho_max / rho_bin) + 1
    accumulator = np.zeros((thetas.size, n_rho))
    chunk = max(1, 2_000_000 // max(xs.size, 1))
    xs32, ys32 = xs.astype(np.float32), ys.astype(np.float32)
    for start in range(0, thetas.size, chunk):
        part = thetas[start : start + chunk]
        cos = (np.cos(part) / rho_bin).astype(np.float32)[:, None]
        sin = (np.sin(part) / rho_bin).astype(np.float32)[:, None]
        rho = xs32[None, :] * cos + ys32[None, :] * sin + np.float32(rho_max / rho_bin)
        index = np.clip(np.rint(rho).astype(np.int64), 0, n_rho - 1)
        flat = index + np.arange(part.size)[:, None] * n_rho
        accumulator[start : start + part.size] = np.bincount(
            flat.ravel(), weights=np.broadcast_to(weights, flat.shape).ravel(), minlength=part.size * n_rho
        ).reshape(part.size, n_rho)
    return accumulator


def chord_lengths(shape: tuple[int, int], thetas: np.ndarray, rhos: np.ndarray) -> np.ndarray:
    """Length (px) inside a ``shape`` image of each line ``x cos t + y sin t = rho``, (len(t), len(rho))."""
    ny, nx = shape
    cos = np.cos(thetas)[:, None]
    sin = np.sin(thetas)[:, None]
    rho = rhos[None, :]
    lo = np.full((thetas.size, rhos.size), -np.inf)
    hi = np.full((thetas.size, rhos.size), np.inf)
    # points: (rho cos - t sin, rho sin + t cos); keep -0.5 <= x <= nx - 0.5, -0.5 <= y <= ny - 0.5
    for base, step, size in ((rho * cos, -sin, nx), (rho * sin, cos, ny)):
        steep = np.abs(step) > 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(steep, (-0.5 - base) / step, -np.inf)
            b = np.where(steep, (size - 0.5 - base) / step, np.inf)
        inside = (base >= -0.5) & (base <= size - 0.5)
        lo = np.maximum(lo, np.where(steep, np.minimum(a, b), np.where(inside, -np.inf, np.inf)))
        hi = np.minimum(hi, np.where(steep, np.maximum(a, b), np.where(inside, np.inf, -np.inf)))
    return np.clip(hi - lo, 0.0, None)


def _block_points(mask: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (y, x) and counts of the ``block`` x ``block`` blocks holding flagged pixels."""
    nx = mask.shape[1]
    ys, xs = np.nonzero(mask)
    nbx = (nx + block - 1) // block
    counts = np.bincount((ys // block) * nbx + xs // block)
    index = np.flatnonzero(counts)
    by, bx = np.divmod(index, nbx)
    centre = (block - 1) / 2.0
    return by * block + centre, bx * block + centre, counts[index].astype(float)


def find_satellite_trails(
    crmask: np.ndarray,
    *,
    min_length_px: float = MIN_TRAIL_LENGTH_PX,
    max_trails: int = MAX_TRAILS_PER_CHIP,
) -> tuple[np.ndarray, list[Trail]]:
    """Straight trails in a chip's CR mask and the band of pixels they cover.

    Parameters
    ----------
    crmask
        bool/uint8 (ny, nx), 1 = flagged.
    min_length_px
        Shortest extent along the line of a trail's flagged pixels, pixels.
    max_trails
        Most trails looked for.

    Returns
    -------
    tuple
        ``(band, trails)``: bool (ny, nx) pixels to exclude, and the trails found.
    """
    mask = np.asarray(crmask, dtype=bool).copy()
    ny, nx = mask.shape
    band = np.zeros((ny, nx), dtype=bool)
    trails: list[Trail] = []
    rho_max = math.hypot(ny, nx)
    thetas = np.arange(0.0, math.pi, math.radians(COARSE_STEP_DEG))
    # chance counts: flag density times the area of each strip inside the chip
    n_rho = math.ceil(2 * rho_max / COARSE_RHO_PX) + 1
    uniform = COARSE_RHO_PX * chord_lengths((ny, nx), thetas, np.arange(n_rho) * COARSE_RHO_PX - rho_max)
    for _ in range(max_trails):
        flagged = int(mask.sum())
        if flagged < MIN_TRAIL_EXCESS:
            break
        density = flagged / mask.size
        # flags come in clusters (a CR is ~12 pixels): chance counts scatter by sqrt(count * size)
        cluster = cluster_size(mask)
        by, bx, counts = _block_points(mask, 4)
        accumulator = _hough(by, bx, counts, thetas, COARSE_RHO_PX, rho_max)
        expected = uniform * density
        excess = accumulator - expected
        score = excess / np.sqrt(cluster * (expected + 1.0))
        candidate = (excess >= MIN_TRAIL_EXCESS) & (score >= TRAIL_NSIGMA)
        if not candidate.any():
            break
        t_index, r_index = np.unravel_index(
            int(np.argmax(np.where(candidate, excess, -np.inf))), excess.shape
        )
        coarse_rho = r_index * COARSE_RHO_PX - rho_max
        trail = _refine(mask, float(thetas[t_index]), coarse_rho, density, cluster, min_length_px)
        if trail is None:
            # not a trail: drop that line's flags from the search so the next best can be tried
            _, line_band = _band(mask.shape, float(thetas[t_index]), coarse_rho, COARSE_RHO_PX)
            mask &= ~line_band
            continue
        _, line_band = _band(mask.shape, math.radians(trail.angle_deg), trail.rho_px, trail.half_width_px)
        band |= line_band
        mask &= ~line_band
        trails.append(trail)
        log.info(
            "satellite trail: angle %.2f deg, rho %.1f px, %d flagged px over %.0f px",
            trail.angle_deg,
            trail.rho_px,
            trail.flagged_pixels,
            trail.length_px,
        )
    return band, trails


def _band(
    shape: tuple[int, int], theta: float, rho: float, half_width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance of every pixel to the line, and the pixels within ``half_width`` of it."""
    ny, nx = shape
    distance = (
        np.arange(nx, dtype=np.float32)[None, :] * np.float32(math.cos(theta))
        + np.arange(ny, dtype=np.float32)[:, None] * np.float32(math.sin(theta))
        - np.float32(rho)
    )
    return distance, np.abs(distance) <= half_width


def cluster_size(mask: np.ndarray) -> float:
    """Mean flagged pixels per 8-connected component (1 for an empty mask)."""
    from scipy.ndimage import label

    _, n = label(mask, structure=np.ones((3, 3), dtype=bool))
    return max(1.0, float(mask.sum()) / n) if n else 1.0


def _refine(
    mask: np.ndarray, theta: float, rho: float, density: float, cluster: float, min_length_px: float
) -> Trail | None:
    """Fit the coarse line to 0.01 deg and 1 px, measure its width and extent; ``None`` if no trail.

    A trail must fill its band along its length: of the 32-px segments between the first and last
    flagged segment, at least half must hold more flags than chance allows.
    """
    ys, xs = np.nonzero(mask)
    near = np.abs(xs * math.cos(theta) + ys * math.sin(theta) - rho) <= 24.0
    ys, xs = ys[near].astype(float), xs[near].astype(float)
    if xs.size < MIN_TRAIL_EXCESS:
        return None
    fine = theta + np.radians(np.arange(-0.4, 0.4001, 0.01))
    rho_max = math.hypot(*mask.shape)
    accumulator = _hough(ys, xs, np.ones(xs.size), fine, 1.0, rho_max)
    smooth = np.apply_along_axis(lambda row: np.convolve(row, np.ones(5), mode="same"), 1, accumulator)
    t_index, r_index = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    theta, rho = float(fine[t_index]), r_index * 1.0 - rho_max
    distance = xs * math.cos(theta) + ys * math.sin(theta) - rho
    along = -xs * math.sin(theta) + ys * math.cos(theta)
    # width: contiguous 1-px bins around the centre well above the chance count along the line
    length_in_chip = float(np.ptp(along)) + 1.0 if along.size else 0.0
    chance = density * length_in_chip
    histogram, edges = np.histogram(distance, bins=np.arange(-16.5, 17.5, 1.0))
    above = histogram > chance + 5.0 * math.sqrt(cluster * (chance + 1.0))
    centre = int(np.argmin(np.abs(edges[:-1] + 0.5)))
    if not above[centre]:
        return None
    lo = hi = centre
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < above.size - 1 and above[hi + 1]:
        hi += 1
    low_edge, high_edge = edges[lo], edges[hi + 1]
    offset = (low_edge + high_edge) / 2.0
    half_width = (high_edge - low_edge) / 2.0 + TRAIL_MARGIN_PX
    inside = np.abs(distance - offset) <= half_width
    if inside.sum() < MIN_TRAIL_EXCESS:
        return None
    extent = float(np.percentile(along[inside], 98) - np.percentile(along[inside], 2))
    if extent < min_length_px:
        return None
    segments = np.bincount(((along[inside] - along[inside].min()) // SEGMENT_PX).astype(np.int64))
    chance_segment = density * SEGMENT_PX * 2.0 * half_width
    occupied = segments >= max(3.0, chance_segment + 2.0 * math.sqrt(cluster * (chance_segment + 1.0)))
    span = np.flatnonzero(occupied)
    if span.size == 0:
        return None
    filled = occupied[span[0] : span[-1] + 1]
    if filled.sum() * SEGMENT_PX < min_length_px or filled.mean() < 0.5:
        return None
    return Trail(math.degrees(theta), float(rho + offset), float(half_width), extent, int(inside.sum()))


def _constant_excess(
    excess: np.ndarray, variance: np.ndarray, consistency_sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Significance of the mean excess over the exposures, and whether each exposure agrees with it."""
    n = excess.shape[0]
    mean = excess.mean(axis=0)
    combined = mean / np.sqrt(variance.mean(axis=0) / n)
    spread = np.abs(excess - mean) / np.sqrt(variance + np.clip(mean, 0, None))
    return combined, spread.max(axis=0) <= consistency_sigma


def recurrent_hot_pixels(
    excess_e: Sequence[np.ndarray],
    sigma_e: Sequence[np.ndarray],
    *,
    nsigma: float = HOT_NSIGMA,
    trail_nsigma: float = HOT_TRAIL_NSIGMA,
    consistency_sigma: float = HOT_CONSISTENCY_SIGMA,
    grow_px: int = HOT_TRAIL_GROW_PX,
    plain_sky: np.ndarray | None = None,
    flagged_any: np.ndarray | None = None,
) -> np.ndarray:
    """Detector pixels that stand above the CR-free model by the same amount in every exposure.

    A pixel is hot when the mean of its excesses over the exposures is ``>= nsigma`` times its
    standard error and every exposure's excess agrees with that mean within ``consistency_sigma``
    (noise of the model plus Poisson noise of the mean excess itself): a CR in one exposure, or
    two CRs of different charge at one pixel, fail the second test. The tests run on all exposures
    (at ``nsigma`` + 0.5: faint warm pixels, flagged where noise lifts them in one exposure) and,
    with three or more exposures, once more with the largest excess left out (a CR may hit the
    hot pixel in one exposure).
    Pixels up to ``grow_px`` along the column from a hot pixel that pass the same tests at
    ``trail_nsigma`` are its CTE trail.

    Parameters
    ----------
    excess_e
        Per exposure, float (ny, nx): exposure minus its CR-free model (blotted median), electrons,
        on the same detector pixels (same chip, same window).
    sigma_e
        Per exposure, float (ny, nx): noise of that difference, electrons.
    nsigma
        Significance of the mean excess of a hot pixel.
    trail_nsigma
        Significance of the mean excess of a trail pixel next to a hot pixel.
    consistency_sigma
        Largest deviation of one exposure's excess from the mean, in sigma.
    grow_px
        Pixels along the column either side searched for the hot pixel's trail.
    plain_sky
        bool (ny, nx): where the all-exposure test applies (default everywhere); on sources the
        blotted median misses part of every peak, which that test would take for a warm pixel.
    flagged_any
        bool (ny, nx): pixels the CR detector flagged in at least one exposure; only hot pixels
        within one pixel of those are returned (a hot pixel nobody flagged is correctly "not CR",
        and in an undithered visit the stars' cores sit on the same detector pixels every time).

    Returns
    -------
    numpy.ndarray
        bool (ny, nx).
    """
    if len(excess_e) < 2:
        return np.zeros(np.shape(excess_e[0]) if excess_e else (0, 0), dtype=bool)
    shape = np.shape(excess_e[0])
    near_flagged = dilate_rectangle(flagged_any, (3, 3)) if flagged_any is not None else None
    # The tests only matter where a hot pixel or its trail can be: next to a flagged pixel and up
    # to grow_px along its column (1-2 % of a chip's pixels are flagged); evaluate them there only.
    region = None
    if near_flagged is not None:
        region = dilate_rectangle(near_flagged, (2 * grow_px + 1, 1)) if grow_px > 0 else near_flagged
    index = np.flatnonzero(region) if region is not None else slice(None)
    excess = np.stack([np.asarray(e, dtype=np.float32).reshape(-1)[index] for e in excess_e])
    variance = np.stack([np.asarray(s, dtype=np.float32).reshape(-1)[index] ** 2 for s in sigma_e])
    sky = (
        np.asarray(plain_sky, dtype=bool).reshape(-1)[index]
        if plain_sky is not None
        else np.ones(excess.shape[1], dtype=bool)
    )
    combined, consistent = _constant_excess(excess, variance, consistency_sigma)
    # a faint warm pixel: every exposure counts (a 3-5 sigma noise peak in one of them is what
    # makes driz_cr flag it), at a higher significance, on plain sky only
    hot_at = (combined >= nsigma + HOT_ALL_EXTRA_SIGMA) & consistent & sky
    trail_at = (combined >= trail_nsigma) & consistent & sky
    if excess.shape[0] >= 3:
        # a CR on the hot pixel in one exposure must not hide it: judge the others
        order = np.argsort(excess, axis=0)[:-1]
        kept = np.take_along_axis(excess, order, axis=0)
        kept_variance = np.take_along_axis(variance, order, axis=0)
        combined_kept, consistent_kept = _constant_excess(kept, kept_variance, consistency_sigma)
        hot_at |= (combined_kept >= nsigma) & consistent_kept
        trail_at |= (combined_kept >= trail_nsigma) & consistent_kept
    hot = np.zeros(shape, dtype=bool)
    trail_ok = np.zeros(shape, dtype=bool)
    hot.reshape(-1)[index] = hot_at
    trail_ok.reshape(-1)[index] = trail_at
    if near_flagged is not None:
        hot &= near_flagged
    if grow_px > 0 and hot.any():
        near = dilate_rectangle(hot, (2 * grow_px + 1, 1))
        hot |= near & trail_ok
    return hot


def exclude_artefacts(
    crmask: np.ndarray,
    valid: np.ndarray,
    *,
    hot: np.ndarray | None = None,
    satellite_band: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Remove artefact pixels from a chip's CR and valid masks and count them.

    Returns
    -------
    tuple
        ``(crmask uint8, valid uint8, counts)``; counts: ``hot_flagged`` / ``satellite_flagged``
        (pixels the detector had flagged as CR and that were artefacts), ``hot_excluded`` /
        ``satellite_excluded`` (pixels removed from the valid mask).
    """
    cr = np.asarray(crmask, dtype=bool)
    good = np.asarray(valid, dtype=bool)
    counts = {"hot_flagged": 0, "hot_excluded": 0, "satellite_flagged": 0, "satellite_excluded": 0}
    for name, region in (("hot", hot), ("satellite", satellite_band)):
        if region is None or not region.any():
            continue
        counts[f"{name}_flagged"] = int((cr & good & region).sum())
        counts[f"{name}_excluded"] = int((good & region).sum())
        cr = cr & ~region
        good = good & ~region
    return cr.astype(np.uint8), good.astype(np.uint8), counts


def sum_counts(rows: Sequence[dict[str, int]]) -> dict[str, Any]:
    """Add :func:`exclude_artefacts` counts over chips."""
    total: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            total[key] = total.get(key, 0) + value
    return total


#: Header keywords of the truth product for :func:`exclude_artefacts` counts.
HEADER_KEYS = {
    "hot_flagged": "NHOTFLAG",
    "hot_excluded": "NHOTEXCL",
    "satellite_flagged": "NSATFLAG",
    "satellite_excluded": "NSATEXCL",
    "satellite_trails": "NSATTRL",
}


def visit_hot_pixels(
    exposures: Sequence[tuple[Callable[[int], np.ndarray], Callable[[int], np.ndarray | None], float]],
    extvers: Sequence[int],
    *,
    flagged: Sequence[dict[int, np.ndarray | None]] | None = None,
) -> dict[int, np.ndarray]:
    """:func:`recurrent_hot_pixels` of every chip of a drizzled visit.

    Parameters
    ----------
    exposures
        Per exposure ``(extver -> its SCI float32 (ny, nx) e-, extver -> blotted median float32
        (ny, nx) e- or None, read noise e-)``; a chip's SCI is asked for only once its blot image
        is there, one exposure at a time (the read step, e.g. :func:`crlib.formats.flc.read_chip_sci`
        on the working copy, opens the file).
    extvers
        SCI extension versions to examine.
    flagged
        Per exposure ``{extver: CR mask (1 = flagged) or None}``: hot pixels are looked for only
        next to pixels flagged in some exposure.

    Returns
    -------
    dict
        ``{extver: bool (ny, nx)}``; chips without a blot image in every exposure are skipped.
    """
    maps: dict[int, np.ndarray] = {}
    for extver in extvers:
        excess, sigma = [], []
        plain_sky = None
        for sci_of, blot_of, read_noise in exposures:
            blot = blot_of(extver)
            if blot is None:
                break
            sci = np.asarray(sci_of(extver), dtype=np.float32)
            model = np.asarray(blot, dtype=np.float32)
            if model.shape != sci.shape:
                break
            residual = sci - model
            residual -= np.float32(np.median(residual[::4, ::4]))
            excess.append(residual)
            sigma.append(np.sqrt(np.clip(model, 0, None) + np.float32(read_noise**2)))
            level = float(np.median(model[::4, ::4]))
            near_sky = model <= level + 5.0 * np.sqrt(max(level, 0.0) + read_noise**2)
            plain_sky = near_sky if plain_sky is None else plain_sky & near_sky
        else:
            if len(excess) >= 2:
                flagged_any = None
                if flagged is not None:
                    masks = [f.get(extver) for f in flagged]
                    flagged_any = np.logical_or.reduce([m.astype(bool) for m in masks if m is not None])
                maps[extver] = recurrent_hot_pixels(
                    excess, sigma, plain_sky=plain_sky, flagged_any=flagged_any
                )
                log.info("chip %d: %d recurrent hot pixels (incl. trail)", extver, int(maps[extver].sum()))
    return maps
