"""Align one visit: catalogs -> tweakwcs relative fit -> absolute fit with fallbacks -> WCS update.

The expected outcomes (too few sources, one exposure, no catalog reachable) are returned as an
:class:`~crlib.records.AlignmentResult` status with a reason; only bad input raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlib.align.catalogs import CatalogOptions, exposure_catalogs
from crlib.align.fit import ChipCorrector, FitOutcome, MatchOptions, fit_with_fallback
from crlib.align.refcat import ReferenceCatalog, fetch_reference_catalog, read_catalog_file
from crlib.align.wcsupdate import write_wcs
from crlib.config import worker_count
from crlib.profiles import InstrumentProfile
from crlib.records import AlignmentResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlignOptions:
    """How to align a visit.

    Attributes
    ----------
    catalog_file
        Local astrometric catalog (skips the network chain).
    catalog_name
        Name for ``catalog_file`` in WCSNAMEs (default: derived from the file name).
    query_catalogs
        Try GAIA DR3 -> GSC 2.4.2 -> 2MASS through astroquery when no file is given.
    timeout_s
        Per-query timeout, seconds (fail fast without network).
    vizier_server
        VizieR mirror host (default: astroquery's).
    min_sources
        Fewest sources a chip catalog needs to take part.
    relative_match, absolute_match
        Matching options of the two fits (the absolute search radius covers arcsec-level pointing errors).
    catalog
        Source-finding options.
    workers
        Threads that build the exposures' source catalogs at once (0: one per CPU core).
    """

    catalog_file: Path | None = None
    catalog_name: str | None = None
    query_catalogs: bool = True
    timeout_s: float = 5.0
    vizier_server: str | None = None
    min_sources: int = 4
    relative_match: MatchOptions = field(default_factory=MatchOptions)
    absolute_match: MatchOptions = field(default_factory=lambda: MatchOptions(searchrad=25.0))
    catalog: CatalogOptions = field(default_factory=CatalogOptions)
    workers: int = 0


def _read_wcs(path: Path, extvers: Sequence[int]) -> dict[int, Any]:
    from astropy.io import fits
    from stwcs.wcsutil import HSTWCS

    with fits.open(path, memmap=False) as hdul:
        return {extver: HSTWCS(hdul, ext=("SCI", extver)) for extver in extvers}


def _footprint_center(wcs: dict[tuple[str, int], Any]) -> tuple[float, float, float]:
    """(ra, dec, radius_arcmin) of a circle covering every chip."""
    from astropy.coordinates import SkyCoord

    corners = []
    for w in wcs.values():
        nx, ny = w.pixel_shape
        xs = np.array([0, nx - 1, 0, nx - 1, nx / 2])
        ys = np.array([0, 0, ny - 1, ny - 1, ny / 2])
        ra, dec = w.all_pix2world(xs, ys, 0)
        corners.append((ra, dec))
    ra = np.concatenate([c[0] for c in corners])
    dec = np.concatenate([c[1] for c in corners])
    points = SkyCoord(ra, dec, unit="deg")
    center = SkyCoord(points.cartesian.mean(), representation_type="cartesian").spherical
    center_coord = SkyCoord(center.lon, center.lat)
    radius = float(center_coord.separation(points).max().arcmin)
    return float(center_coord.ra.deg), float(center_coord.dec.deg), radius * 1.1 + 0.2


def _restrict_to_footprint(
    refcat: ReferenceCatalog, wcs: dict[tuple[str, int], Any], margin_px: float
) -> Any:
    from astropy.coordinates import SkyCoord

    # cut on angle first: the distortion polynomials diverge far outside the detector
    ra0, dec0, radius_arcmin = _footprint_center(wcs)
    distance = SkyCoord(refcat.table["RA"], refcat.table["DEC"], unit="deg").separation(
        SkyCoord(ra0, dec0, unit="deg")
    )
    table = refcat.table[distance.arcmin < radius_arcmin]
    inside = np.zeros(len(table), dtype=bool)
    for w in wcs.values():
        x, y = w.all_world2pix(np.asarray(table["RA"]), np.asarray(table["DEC"]), 0, quiet=True)
        nx, ny = w.pixel_shape
        inside |= (x > -margin_px) & (x < nx + margin_px) & (y > -margin_px) & (y < ny + margin_px)
    subset = table[inside]
    subset.meta["name"] = refcat.name
    return subset


def _reference_catalog(
    options: AlignOptions, wcs: dict[tuple[str, int], Any]
) -> tuple[ReferenceCatalog | None, str]:
    if options.catalog_file is not None:
        from_file = read_catalog_file(options.catalog_file, name=options.catalog_name)
        return from_file, f"catalog file {options.catalog_file}"
    if not options.query_catalogs:
        return None, "absolute fit disabled (no catalog file, catalog queries off)"
    ra, dec, radius = _footprint_center(wcs)
    refcat, attempts = fetch_reference_catalog(
        ra_deg=ra,
        dec_deg=dec,
        radius_arcmin=radius,
        timeout_s=options.timeout_s,
        server=options.vizier_server,
    )
    return refcat, "; ".join(attempts)


def align_visit(
    exposures: Sequence[Path],
    *,
    visit: str,
    profile: InstrumentProfile,
    options: AlignOptions | None = None,
    write: bool = True,
) -> AlignmentResult:
    """Align the exposures of one visit and write the new WCS into them.

    Parameters
    ----------
    exposures
        Working copies of the visit's exposure files (modified in place when ``write``).
    visit
        Visit id for the record.
    profile
        Instrument profile (PSF size, saturation level).
    options
        Alignment options.
    write
        Write the fitted WCS (``-FIT_SVM_<catalog>`` or ``-FIT_REL_NONE``) into the files.

    Returns
    -------
    AlignmentResult
        ``aligned_absolute`` / ``aligned_relative`` / ``not_aligned`` with a reason; ``rms_px`` is
        the relative-fit RMS (what matters for driz_cr), the absolute RMS is in ``per_exposure``.
    """
    opts = options or AlignOptions()
    paths = [Path(p) for p in exposures]
    chips: list[ChipCorrector] = []
    wcs: dict[tuple[str, int], Any] = {}
    n_sources: dict[str, int] = {}
    # Source finding (photutils, numpy, scipy: mostly outside the GIL) runs in threads, one
    # exposure each; the WCSs are read afterwards in this thread.
    with ThreadPoolExecutor(max_workers=worker_count(opts.workers, len(paths))) as pool:
        found = list(pool.map(lambda p: exposure_catalogs(p, profile=profile, options=opts.catalog), paths))
    for path, catalogs in zip(paths, found, strict=True):
        rootname = path.name.split("_")[0].lower()
        chip_wcs = _read_wcs(path, list(catalogs))
        n_sources[rootname] = 0
        for extver, chip_catalog in catalogs.items():
            wcs[(rootname, extver)] = chip_wcs[extver]
            n_sources[rootname] += len(chip_catalog)  # type: ignore[arg-type]
            if len(chip_catalog) >= opts.min_sources:  # type: ignore[arg-type]
                chips.append(ChipCorrector(path, rootname, extver, chip_catalog))
    log.info("visit %s: sources per exposure %s", visit, n_sources)
    usable = sorted({c.rootname for c in chips})
    sources_note = {k: float(v) for k, v in n_sources.items()}
    if len(paths) < 2:
        return AlignmentResult(
            visit,
            "not_aligned",
            None,
            None,
            0,
            None,
            None,
            reason="a single exposure: nothing to align relative to",
            per_exposure={k: {"n_sources": v} for k, v in sources_note.items()},
        )
    if len(usable) < len(paths):
        poor = sorted(set(n_sources) - set(usable))
        return AlignmentResult(
            visit,
            "not_aligned",
            None,
            None,
            0,
            None,
            None,
            reason=f"too few sources (< {opts.min_sources} per chip) in {', '.join(poor)}",
            per_exposure={k: {"n_sources": v} for k, v in sources_note.items()},
        )

    relative = fit_with_fallback(chips, wcs, match=opts.relative_match)
    if not relative.success:
        return AlignmentResult(
            visit,
            "not_aligned",
            None,
            None,
            relative.n_matches,
            None,
            None,
            reason=f"relative fit failed: {relative.reason}",
            per_exposure={k: {"n_sources": v} for k, v in sources_note.items()},
        )
    aligned_wcs = dict(wcs)
    aligned_wcs.update(relative.wcs)
    per_exposure = {k: dict(v, n_sources=sources_note.get(k, 0.0)) for k, v in relative.per_exposure.items()}

    refcat, catalog_note = _reference_catalog(opts, aligned_wcs)
    absolute: FitOutcome | None = None
    if refcat is not None:
        subset = _restrict_to_footprint(refcat, aligned_wcs, margin_px=opts.absolute_match.searchrad)
        if len(subset) >= 3:
            # one group per exposure: a group of all exposures would hold every star three times
            absolute = fit_with_fallback(chips, aligned_wcs, refcat=subset, match=opts.absolute_match)
            if not absolute.success:
                catalog_note += f"; absolute fit to {refcat.name} failed: {absolute.reason}"
                absolute = None
        else:
            catalog_note += f"; only {len(subset)} {refcat.name} sources in the footprint"

    catalog: str | None = None
    reason: str | None = None
    fitgeom: str | None = relative.fitgeom
    if absolute is not None and refcat is not None:
        final_wcs = dict(aligned_wcs)
        final_wcs.update(absolute.wcs)
        label, status = f"FIT_SVM_{refcat.name}", "aligned_absolute"
        catalog = refcat.name
        for rootname, info in absolute.per_exposure.items():
            per_exposure.setdefault(rootname, {}).update(
                abs_n_matches=info.get("n_matches", 0.0),
                abs_rms_px=info.get("rms_px", math.nan),
                abs_shift_x=info.get("shift_x", 0.0),
                abs_shift_y=info.get("shift_y", 0.0),
            )
        fitgeom = f"{relative.fitgeom}+{absolute.fitgeom}"
    else:
        final_wcs, label, status = aligned_wcs, "FIT_REL_NONE", "aligned_relative"
        reason = f"kept the relative fit: {catalog_note}"

    wcsname: str | None = None
    if write:
        for path in paths:
            rootname = path.name.split("_")[0].lower()
            solutions = {extver: w for (root, extver), w in final_wcs.items() if root == rootname}
            keywords = {
                "RELGEOM": relative.fitgeom,
                "RELMATCH": relative.n_matches,
                "FITGEOM": absolute.fitgeom if absolute else relative.fitgeom,
                "NMATCHES": absolute.n_matches if absolute else relative.n_matches,
            }
            wcsname = write_wcs(path, solutions, label=label, keywords=keywords)
    log.info(
        "visit %s: %s (%s), rms %.3f px, %d matches",
        visit,
        status,
        fitgeom,
        relative.rms_px or math.nan,
        relative.n_matches,
    )
    return AlignmentResult(
        visit=visit,
        status=status,  # type: ignore[arg-type]
        catalog=catalog,
        fit_geometry=fitgeom,
        n_matches=relative.n_matches,
        rms_px=relative.rms_px,
        wcsname=wcsname,
        reason=reason,
        per_exposure=per_exposure,
    )
