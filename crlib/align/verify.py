"""Refuse a relative fit that does not beat the header WCS.

tweakwcs fits whatever its matcher hands it: in a sparse field whose catalogs hold cosmic rays and
noise peaks, a chance peak of the 2-D offset histogram gives a "fit" on a handful of matches that
moves exposures by tens of pixels (measured on a real 8-exposure visit: 3-6 matches of ~200
sources, shifts of 20-57 px, rms 0.3-1.2 px: truth ``suspect``; on the header WCS alone ``ok``). As
drizzlepac's ``align.determine_fit_quality`` does, each exposure's fit is checked after the fact
and refused when

* its shift exceeds the matcher's search radius,
* its fit rms exceeds drizzlepac SVM's ``MAX_FIT_LIMIT`` (150 mas, 3 ACS/WFC pixels),
* on the source pairs the *header* WCS already lines up with the reference exposure (within the
  match tolerance, and clearly more of them than chance gives), the fitted WCS leaves a larger
  systematic offset (median separation) than the header does.

Each exposure is judged on its own against the fit's reference exposure: a refused exposure keeps
its header WCS, the others take the fit. The median offset, not the rms, decides: on simulated
sparse visits the pair rms is dominated by centroid scatter of faint galaxies (0.3-0.6 px), so
a 0.1 px better or worse alignment changes it by ~0.01 px, while the median offset tracked the
true misalignment of header and fit to 0.01-0.02 px typically (see ``docs/truth.md``).

The minimum number of matches per fit geometry is enforced earlier, as tweakwcs' ``minobj``
(:data:`crlib.align.fit.FITGEOM_FALLBACK`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crlib.align.fit import ChipCorrector, FitOutcome
from crlib.records import AlignmentResult

log = logging.getLogger(__name__)

#: drizzlepac SVM ``determine_fit_quality.MAX_FIT_LIMIT``: a fit rms above it is never accepted, mas.
MAX_FIT_LIMIT_MAS = 150.0


@dataclass(frozen=True, slots=True)
class FitLimits:
    """When a relative fit is refused.

    Attributes
    ----------
    max_rms_arcsec
        Largest per-exposure fit rms (drizzlepac ``MAX_FIT_LIMIT``: 0.15").
    min_header_pairs
        Fewest source pairs the header WCS must line up for the header comparison to count
        (drizzlepac ``MIN_CROSS_MATCHES``: 3).
    chance_factor
        The header pairs must also number at least this many times the pairs chance alone gives.
    """

    max_rms_arcsec: float = MAX_FIT_LIMIT_MAS / 1000.0
    min_header_pairs: int = 3
    chance_factor: float = 3.0


@dataclass(frozen=True, slots=True)
class HeaderComparison:
    """Source pairs of one exposure and the reference exposure that the header WCS lines up.

    Attributes
    ----------
    n_pairs
        Pairs within the match tolerance under the header WCS.
    n_chance
        Pairs expected by chance alone (source density x tolerance disk).
    header_rms_px, fit_rms_px
        RMS separation of those pairs under the header WCS and under the fitted WCS, pixels.
    header_offset_px, fit_offset_px
        Length of the median separation vector under the header and the fitted WCS: the
        misalignment each leaves (robust to the chance pairs among them).
    """

    n_pairs: int
    n_chance: float
    header_rms_px: float
    fit_rms_px: float
    header_offset_px: float
    fit_offset_px: float


def _sky_positions(chips: Sequence[ChipCorrector], wcs: dict[tuple[str, int], Any]) -> np.ndarray:
    """(n, 2) RA/Dec (degrees) of every catalog source of ``chips`` under ``wcs``."""
    points = []
    for chip in chips:
        x = np.asarray(chip.catalog["x"], float)
        y = np.asarray(chip.catalog["y"], float)
        if x.size:
            ra, dec = wcs[(chip.rootname, chip.sci_extver)].all_pix2world(x, y, 0)
            points.append(np.column_stack([ra, dec]))
    return np.concatenate(points) if points else np.empty((0, 2))


def _to_pixels(radec: np.ndarray, origin: tuple[float, float], scale_arcsec: float) -> np.ndarray:
    """Local flat projection around ``origin`` in pixels of ``scale_arcsec`` (fine over a few arcmin)."""
    ra0, dec0 = origin
    dra = (radec[:, 0] - ra0 + 180.0) % 360.0 - 180.0
    u = dra * math.cos(math.radians(dec0)) * 3600.0 / scale_arcsec
    v = (radec[:, 1] - dec0) * 3600.0 / scale_arcsec
    return np.column_stack([u, v])


def compare_with_header(
    reference: Sequence[ChipCorrector],
    exposure: Sequence[ChipCorrector],
    header_wcs: dict[tuple[str, int], Any],
    fitted_wcs: dict[tuple[str, int], Any],
    *,
    tolerance_px: float,
    scale_arcsec: float,
) -> HeaderComparison:
    """Pair one exposure's sources with the reference exposure's under the header WCS; score both WCSs.

    Parameters
    ----------
    reference, exposure
        Chips (with catalogs) of the fit's reference exposure and of one fitted exposure.
    header_wcs, fitted_wcs
        ``{(rootname, sci_extver): HSTWCS}`` before and after the fit (the reference is unmoved).
    tolerance_px
        Pairing radius, pixels.
    scale_arcsec
        Pixel scale, arcsec.

    Returns
    -------
    HeaderComparison
    """
    from scipy.spatial import cKDTree

    ref_sky = _sky_positions(reference, header_wcs)
    header_sky = _sky_positions(exposure, header_wcs)
    fitted_sky = _sky_positions(exposure, fitted_wcs)
    if len(ref_sky) == 0 or len(header_sky) == 0:
        return HeaderComparison(0, 0.0, math.nan, math.nan, math.nan, math.nan)
    origin = (float(np.median(ref_sky[:, 0])), float(np.median(ref_sky[:, 1])))
    ref_xy = _to_pixels(ref_sky, origin, scale_arcsec)
    header_xy = _to_pixels(header_sky, origin, scale_arcsec)
    fitted_xy = _to_pixels(fitted_sky, origin, scale_arcsec)
    distance, index = cKDTree(ref_xy).query(header_xy, distance_upper_bound=tolerance_px)
    paired = np.isfinite(distance)
    span = np.ptp(ref_xy, axis=0)
    density = len(ref_xy) / max(float(span[0] * span[1]), 1.0)
    n_chance = len(header_xy) * density * math.pi * tolerance_px**2
    if not paired.any():
        return HeaderComparison(0, n_chance, math.nan, math.nan, math.nan, math.nan)
    partners = ref_xy[index[paired]]
    header_sep = header_xy[paired] - partners
    fitted_sep = fitted_xy[paired] - partners
    return HeaderComparison(
        n_pairs=int(paired.sum()),
        n_chance=float(n_chance),
        header_rms_px=float(np.sqrt(np.mean(np.sum(header_sep**2, axis=1)))),
        fit_rms_px=float(np.sqrt(np.mean(np.sum(fitted_sep**2, axis=1)))),
        header_offset_px=float(np.hypot(*np.median(header_sep, axis=0))),
        fit_offset_px=float(np.hypot(*np.median(fitted_sep, axis=0))),
    )


def _counts(comparison: HeaderComparison, limits: FitLimits) -> bool:
    """Whether the header pairs are real sources rather than chance coincidences."""
    return (
        comparison.n_pairs >= limits.min_header_pairs
        and comparison.n_pairs >= limits.chance_factor * comparison.n_chance
    )


def verify_relative_fit(
    outcome: FitOutcome,
    chips: Sequence[ChipCorrector],
    header_wcs: dict[tuple[str, int], Any],
    *,
    searchrad_px: float,
    tolerance_px: float,
    scale_arcsec: float,
    limits: FitLimits | None = None,
) -> tuple[dict[str, str], dict[str, HeaderComparison]]:
    """Check each exposure of a relative fit against the search radius, the rms limit and its header WCS.

    Every exposure is compared with the fit's reference exposure, which the fit never moves, so
    each one can keep its header WCS or take the fit on its own.

    Parameters
    ----------
    outcome
        The relative fit (``success`` True).
    chips
        The chips that took part, with their catalogs.
    header_wcs
        ``{(rootname, sci_extver): HSTWCS}`` as read from the files.
    searchrad_px, tolerance_px
        The matcher's search radius and tolerance, pixels.
    scale_arcsec
        Pixel scale, arcsec.
    limits
        Refusal limits.

    Returns
    -------
    tuple
        ``(refused, comparisons)``: ``{rootname: why its fit is refused}`` for the exposures that
        keep their header WCS, and the header comparison of every fitted exposure.
    """
    lim = limits or FitLimits()
    max_rms_px = lim.max_rms_arcsec / scale_arcsec
    reference = next((r for r, v in outcome.per_exposure.items() if v.get("reference")), None)
    fitted_wcs = dict(header_wcs)
    fitted_wcs.update(outcome.wcs)
    by_root: dict[str, list[ChipCorrector]] = {}
    for chip in chips:
        by_root.setdefault(chip.rootname, []).append(chip)
    refused: dict[str, str] = {}
    comparisons: dict[str, HeaderComparison] = {}
    for rootname, info in sorted(outcome.per_exposure.items()):
        if info.get("reference"):
            continue
        problems = []
        shift = math.hypot(info.get("shift_x", 0.0), info.get("shift_y", 0.0))
        if shift > searchrad_px:
            problems.append(f"shift {shift:.1f} px > search radius {searchrad_px:g} px")
        rms = info.get("rms_px", math.nan)
        if not rms <= max_rms_px:
            problems.append(f"fit rms {rms:.2f} px > {max_rms_px:.1f} px (MAX_FIT_LIMIT)")
        if reference is not None:
            comparison = compare_with_header(
                by_root.get(reference, []),
                by_root.get(rootname, []),
                header_wcs,
                fitted_wcs,
                tolerance_px=tolerance_px,
                scale_arcsec=scale_arcsec,
            )
            comparisons[rootname] = comparison
            if _counts(comparison, lim) and comparison.fit_offset_px > comparison.header_offset_px:
                problems.append(
                    f"on the {comparison.n_pairs} source pairs its header WCS lines up within "
                    f"{tolerance_px:g} px, the fit leaves {comparison.fit_offset_px:.3f} px of offset "
                    f"(rms {comparison.fit_rms_px:.2f}) against the header's "
                    f"{comparison.header_offset_px:.3f} px (rms {comparison.header_rms_px:.2f})"
                )
        if problems:
            refused[rootname] = ", ".join(problems)
            log.info("%s: relative fit refused, header WCS kept (%s)", rootname, refused[rootname])
    return refused, comparisons


def header_error_px(alignment: AlignmentResult, *, limits: FitLimits | None = None) -> float | None:
    """Largest misalignment of the exposures a relative alignment left on their header WCS.

    Parameters
    ----------
    alignment
        The visit's alignment; its ``per_exposure`` entries with ``header_kept`` (written by
        :func:`crlib.align.visit.align_visit` from :func:`verify_relative_fit`) are looked at.
    limits
        What makes a header comparison count.

    Returns
    -------
    float or None
        Pixels, measured against the reference exposure on source pairs; ``inf`` when some such
        exposure's offset could not be measured (too few pairs beyond chance); ``None`` when no
        exposure was left on its header WCS this way or the visit was aligned to a catalog.
    """
    if alignment.status == "aligned_absolute":
        return None
    lim = limits or FitLimits()
    kept = [v for v in alignment.per_exposure.values() if v.get("header_kept")]
    if not kept:
        return None
    worst = 0.0
    for entry in kept:
        offset = entry.get("header_offset_px", math.nan)
        pairs = entry.get("header_pairs", 0.0)
        counts = pairs >= lim.min_header_pairs and pairs >= lim.chance_factor * entry.get(
            "header_chance_pairs", 0.0
        )
        worst = max(worst, offset if counts and math.isfinite(offset) else math.inf)
    return worst
