"""Align one visit: catalogs -> tweakwcs relative fit -> absolute fit with fallbacks -> WCS update.

The expected outcomes (too few sources, one exposure, no catalog reachable) are returned as an
:class:`~crlib.records.AlignmentResult` status with a reason; only bad input raises.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlib.align.catalogs import CatalogOptions, exposure_catalogs, strict_sources
from crlib.align.fit import ChipCorrector, FitOutcome, MatchOptions, fit_with_fallback
from crlib.align.refcat import ReferenceCatalog, fetch_reference_catalog, read_catalog_file
from crlib.align.verify import FitLimits, HeaderComparison, compare_with_header, verify_relative_fit
from crlib.align.wcsupdate import write_wcs
from crlib.config import worker_count
from crlib.errors import InputDataError
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
    header_match
        Matching of the second relative try, around the header WCS (no 2-D histogram, a small
        search radius): used when the wide search fails although the header WCS already pairs the
        exposures' sources well beyond chance. The wide search's 2-D histogram peak can be pulled
        pixels off by the many unmatched sources (cosmic rays) of a sparse field, after which no
        match falls within the tolerance.
    refine_match
        Matching of the refinement pass (``None``: no refinement): once a relative fit is accepted,
        it is fitted again from the fitted WCS on the looser catalogs (``refine_min_pixels``), with
        a 1 px search and tolerance, so that stars of every sub-pixel phase take part (see
        :class:`~crlib.align.catalogs.CatalogOptions`); the same match rule applies, and the pass
        is kept only when every exposure succeeds.
    catalog
        Source-finding options.
    fit_limits
        When a relative fit is refused and the header WCS kept (:mod:`crlib.align.verify`).
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
    header_match: MatchOptions = field(default_factory=lambda: MatchOptions(searchrad=3.0, use2dhist=False))
    refine_match: MatchOptions | None = field(
        default_factory=lambda: MatchOptions(searchrad=1.0, tolerance=1.0, use2dhist=False)
    )
    catalog: CatalogOptions = field(default_factory=CatalogOptions)
    fit_limits: FitLimits = field(default_factory=FitLimits)
    workers: int = 0


@dataclass(frozen=True, slots=True)
class VisitCatalogs:
    """Source catalogs of a visit's exposures, and the exposures whose data defeat them.

    Attributes
    ----------
    catalogs
        ``{path: {sci_extver: Table}}`` of every exposure that could be measured.
    failures
        ``{path: InputDataError}``: unusable pixels (all-NaN, mostly NaN or constant chip, photutils
        refusing them) or no source at all while other exposures of the visit have plenty.
    """

    catalogs: dict[Path, dict[int, Any]]
    failures: dict[Path, InputDataError]


def _rootname(path: Path) -> str:
    return path.name.split("_")[0].lower()


def visit_catalogs(
    exposures: Sequence[Path], *, profile: InstrumentProfile, options: AlignOptions | None = None
) -> VisitCatalogs:
    """Source catalogs of every exposure, with per-exposure data problems returned, not raised.

    An exposure with no source on any chip while at least two others of the visit have
    ``min_sources`` on some chip cannot be aligned with them (an empty or shutter-failed
    exposure): it is a failure too. A field that is blank in every exposure is not.

    Parameters
    ----------
    exposures
        Exposure files.
    profile
        Instrument profile (PSF size, saturation level).
    options
        Alignment options (``catalog``, ``min_sources``, ``workers``).

    Returns
    -------
    VisitCatalogs
    """
    opts = options or AlignOptions()
    paths = [Path(p) for p in exposures]

    def one(path: Path) -> dict[int, Any] | InputDataError:
        try:
            return exposure_catalogs(path, profile=profile, options=opts.catalog)
        except InputDataError as exc:  # this exposure's data: recorded, the visit goes on
            return exc

    # Source finding (photutils, numpy, scipy: mostly outside the GIL) runs in threads, one exposure each.
    with ThreadPoolExecutor(max_workers=worker_count(opts.workers, len(paths))) as pool:
        found = list(pool.map(one, paths))
    catalogs: dict[Path, dict[int, Any]] = {}
    failures: dict[Path, InputDataError] = {}
    for path, result in zip(paths, found, strict=True):
        if isinstance(result, InputDataError):
            log.warning("%s", result)
            failures[path] = result
        else:
            catalogs[path] = result
    # counted on the strict sources (the first fit's), not the looser refinement set
    strict = {p: [len(strict_sources(t, opts.catalog)) for t in c.values()] for p, c in catalogs.items()}
    counts = {p: sum(n) for p, n in strict.items()}
    usable = [p for p, n in strict.items() if any(k >= opts.min_sources for k in n)]
    for path in [p for p, n in counts.items() if n == 0]:
        others = sorted(counts[p] for p in usable if p != path)
        if len(others) >= 2:
            failures[path] = InputDataError(
                path,
                f"no source found on any chip while {len(others)} other exposures of the visit have "
                f"{others[0]}-{others[-1]}: it cannot be aligned with them",
                fix="check the exposure (shutter, guiding, target) or download it again",
            )
            log.warning("%s", failures[path])
            del catalogs[path]
    return VisitCatalogs(catalogs, failures)


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


def _header_note(comparison: HeaderComparison, *, kept: bool) -> dict[str, float]:
    """Per-exposure record entries of a :class:`~crlib.align.verify.HeaderComparison`."""
    return {
        "header_kept": float(kept),
        "header_pairs": float(comparison.n_pairs),
        "header_chance_pairs": comparison.n_chance,
        "header_rms_px": comparison.header_rms_px,
        "header_offset_px": comparison.header_offset_px,
        "fit_rms_on_header_pairs_px": comparison.fit_rms_px,
        "fit_offset_on_header_pairs_px": comparison.fit_offset_px,
    }


def _header_only(
    chips: Sequence[ChipCorrector],
    wcs: dict[tuple[str, int], Any],
    *,
    tolerance_px: float,
    profile: InstrumentProfile,
) -> dict[str, dict[str, float]]:
    """Header comparison of every exposure with the first one (the reference), when no fit moved any."""
    by_root: dict[str, list[ChipCorrector]] = {}
    for chip in chips:
        by_root.setdefault(chip.rootname, []).append(chip)
    reference, *others = sorted(by_root)
    notes: dict[str, dict[str, float]] = {}
    for rootname in others:
        comparison = compare_with_header(
            by_root[reference],
            by_root[rootname],
            wcs,
            wcs,
            tolerance_px=tolerance_px,
            scale_arcsec=profile.plate_scale_arcsec,
        )
        notes[rootname] = _header_note(comparison, kept=True)
    return notes


def _pairs_count(note: dict[str, float], limits: FitLimits) -> bool:
    """Whether a header note's source pairs are real sources rather than chance coincidences."""
    pairs = note.get("header_pairs", 0.0)
    return pairs >= limits.min_header_pairs and pairs >= limits.chance_factor * note.get(
        "header_chance_pairs", 0.0
    )


def _refine(
    loose_chips: Sequence[ChipCorrector],
    aligned_wcs: dict[tuple[str, int], Any],
    relative: FitOutcome,
    refused: dict[str, str],
    per_exposure: dict[str, dict[str, float]],
    opts: AlignOptions,
    scale_arcsec: float,
) -> str | None:
    """Refit the accepted exposures from their fitted WCS on the looser catalogs, within 1 px.

    Updates ``aligned_wcs`` and ``per_exposure`` (``refine_*`` entries) in place when every
    exposure's refit succeeds with the rule's matches, a shift within the search radius and an rms
    within the fit limit; returns a note for the reason (``None`` when nothing was tried).
    """
    if opts.refine_match is None:
        return None
    taken = {k for k in relative.per_exposure if k not in refused}
    chips = [c for c in loose_chips if c.rootname in taken]
    if len({c.rootname for c in chips}) < 2:
        return None
    refined = fit_with_fallback(chips, aligned_wcs, match=opts.refine_match)
    if not refined.success:
        return f"refinement on the looser catalogs failed ({refined.reason}); first fit kept"
    limit_px = opts.fit_limits.max_rms_arcsec / scale_arcsec
    for rootname, info in refined.per_exposure.items():
        if info.get("reference"):
            continue
        moved = math.hypot(info.get("shift_x", 0.0), info.get("shift_y", 0.0))
        if moved > opts.refine_match.searchrad or not info.get("rms_px", math.inf) <= limit_px:
            rms = info.get("rms_px")
            return f"refinement refused for {rootname} (shift {moved:.3f} px, rms {rms}); first fit kept"
    aligned_wcs.update(refined.wcs)
    for rootname, info in refined.per_exposure.items():
        entry = per_exposure.setdefault(rootname, {})
        if info.get("reference"):
            entry["refine_reference"] = 1.0
            continue
        entry.update(
            refine_n_matches=info["n_matches"],
            refine_n_fit=info.get("n_fit", info["n_matches"]),
            refine_min_matches=info.get("min_matches", 0.0),
            refine_rms_px=info["rms_px"],
            refine_shift_x=info.get("shift_x", 0.0),
            refine_shift_y=info.get("shift_y", 0.0),
        )
    fitted = [v for v in refined.per_exposure.values() if not v.get("reference")]
    low = int(min(v["n_matches"] for v in fitted))
    radius = opts.refine_match.searchrad
    return f"refined ({refined.fitgeom}) on the looser catalogs within {radius:g} px: >= {low} matches"


def align_visit(
    exposures: Sequence[Path],
    *,
    visit: str,
    profile: InstrumentProfile,
    options: AlignOptions | None = None,
    write: bool = True,
    catalogs: VisitCatalogs | None = None,
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
    catalogs
        The exposures' catalogs from :func:`visit_catalogs` (default: built here). Exposures among
        its ``failures`` are left out of the fit and keep their header WCS; the reason names them.

    Returns
    -------
    AlignmentResult
        ``aligned_absolute`` / ``aligned_relative`` / ``not_aligned`` with a reason; ``rms_px`` and
        ``n_matches`` are the relative fit's (what matters for driz_cr) over the exposures that took
        it, the absolute RMS is in ``per_exposure``. An exposure whose relative fit
        :func:`~crlib.align.verify.verify_relative_fit` refuses keeps its header WCS
        (``header_kept`` in ``per_exposure``); when every one does, the visit is ``not_aligned``.
    """
    opts = options or AlignOptions()
    all_paths = [Path(p) for p in exposures]
    found = catalogs if catalogs is not None else visit_catalogs(all_paths, profile=profile, options=opts)
    excluded = [found.failures[p] for p in all_paths if p in found.failures]
    excluded_note = "; ".join(f"left out {exc}" for exc in excluded)
    paths = [p for p in all_paths if p in found.catalogs]
    chips: list[ChipCorrector] = []
    loose_chips: list[ChipCorrector] = []
    wcs: dict[tuple[str, int], Any] = {}
    n_sources: dict[str, int] = {}
    for path in paths:
        rootname = _rootname(path)
        chip_wcs = _read_wcs(path, list(found.catalogs[path]))
        n_sources[rootname] = 0
        for extver, chip_catalog in found.catalogs[path].items():
            wcs[(rootname, extver)] = chip_wcs[extver]
            strict = strict_sources(chip_catalog, opts.catalog)
            n_sources[rootname] += len(strict)
            if len(strict) >= opts.min_sources:
                chips.append(ChipCorrector(path, rootname, extver, strict))
                loose = chip_catalog[: opts.catalog.max_sources]
                loose_chips.append(ChipCorrector(path, rootname, extver, loose))
    log.info("visit %s: sources per exposure %s", visit, n_sources)
    usable = sorted({c.rootname for c in chips})
    sources_note = {k: float(v) for k, v in n_sources.items()}

    def not_aligned(
        reason: str, n_matches: int = 0, extra: dict[str, dict[str, float]] | None = None
    ) -> AlignmentResult:
        if excluded_note:
            reason = f"{reason}; {excluded_note}"
        log.info("visit %s: not aligned (%s)", visit, reason)
        per_exposure = {k: {"n_sources": v, **(extra or {}).get(k, {})} for k, v in sources_note.items()}
        return AlignmentResult(
            visit, "not_aligned", None, None, n_matches, None, None, reason=reason, per_exposure=per_exposure
        )

    if len(all_paths) < 2:
        return not_aligned("a single exposure: nothing to align relative to")
    if len(paths) < 2:
        return not_aligned(f"{len(paths)} exposure(s) with usable pixels: nothing to align relative to")
    if len(usable) < len(paths):
        poor = sorted(set(n_sources) - set(usable))
        return not_aligned(f"too few sources (< {opts.min_sources} per chip) in {', '.join(poor)}")

    relative = fit_with_fallback(chips, wcs, match=opts.relative_match)
    used_match = opts.relative_match
    if not relative.success:
        # How well the header WCSs line up, measured on source pairs: the truth gate judges the
        # header by it when no fit is taken, instead of distrusting every unaligned visit.
        header_only = _header_only(chips, wcs, tolerance_px=opts.header_match.tolerance, profile=profile)
        wide = relative.reason
        why = f"relative fit failed: {wide}"
        if header_only and all(_pairs_count(note, opts.fit_limits) for note in header_only.values()):
            relative = fit_with_fallback(chips, wcs, match=opts.header_match)
            used_match = opts.header_match
            why = f"relative fit failed: wide search: {wide}; around the header WCS: {relative.reason}"
        if not relative.success:
            return not_aligned(f"{why}; header WCS kept", relative.n_matches, header_only)
        log.info("visit %s: wide search failed (%s); matched around the header WCS", visit, wide)
        relative = dataclasses.replace(
            relative,
            reason=f"wide search failed ({wide}); matched within {used_match.searchrad:g} px of the header "
            "WCS",
        )

    def verified(
        fit: FitOutcome, match: MatchOptions
    ) -> tuple[dict[str, str], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """The fit's refusals, per-exposure header notes and accepted exposures."""
        refusals, comparisons = verify_relative_fit(
            fit,
            chips,
            wcs,
            searchrad_px=match.searchrad,
            tolerance_px=match.tolerance,
            scale_arcsec=profile.plate_scale_arcsec,
            limits=opts.fit_limits,
        )
        notes = {k: _header_note(c, kept=k in refusals) for k, c in comparisons.items()}
        for rootname in refusals:
            notes.setdefault(rootname, {"header_kept": 1.0})
        kept = {k: v for k, v in fit.per_exposure.items() if not v.get("reference") and k not in refusals}
        return refusals, notes, kept

    refused, header, accepted = verified(relative, used_match)
    refused_note = "; ".join(f"{k}: {why}" for k, why in sorted(refused.items()))
    if (
        not accepted
        and used_match is opts.relative_match
        and header
        and all(_pairs_count(note, opts.fit_limits) for note in header.values())
    ):
        # The wide search's fit was refused while the header WCSs already line up the sources
        # (its 2-D histogram peak was pulled off by cosmic-ray chance pairs): match again within
        # the header match's radius, as when the wide search fails outright.
        retry = fit_with_fallback(chips, wcs, match=opts.header_match)
        if retry.success:
            retry_refused, retry_header, retry_accepted = verified(retry, opts.header_match)
            if retry_accepted:
                log.info(
                    "visit %s: wide-search fit refused (%s); matched around the header WCS",
                    visit,
                    refused_note,
                )
                relative = dataclasses.replace(
                    retry,
                    reason=f"wide-search {relative.fitgeom} fit refused ({refused_note}); matched within "
                    f"{opts.header_match.searchrad:g} px of the header WCS",
                )
                used_match = opts.header_match
                refused, header, accepted = retry_refused, retry_header, retry_accepted
                refused_note = "; ".join(f"{k}: {why}" for k, why in sorted(refused.items()))
    if not accepted:
        return not_aligned(
            f"header WCS kept: the {relative.fitgeom} relative fit is refused for every exposure "
            f"({refused_note})",
            relative.n_matches,
            header,
        )
    n_matches = int(min(v["n_matches"] for v in accepted.values()))
    total = sum(v["n_matches"] for v in accepted.values())
    rms_px = math.sqrt(sum(v["n_matches"] * v["rms_px"] ** 2 for v in accepted.values()) / total)
    aligned_wcs = dict(wcs)
    aligned_wcs.update({key: w for key, w in relative.wcs.items() if key[0] not in refused})
    per_exposure = {
        k: dict(v, n_sources=sources_note.get(k, 0.0), **header.get(k, {}))
        for k, v in relative.per_exposure.items()
    }
    if refused:
        excluded_note = "; ".join(filter(None, [f"header WCS kept for {refused_note}", excluded_note]))
    refine_note = _refine(
        loose_chips, aligned_wcs, relative, refused, per_exposure, opts, profile.plate_scale_arcsec
    )

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
    if excluded_note:
        reason = f"{reason}; {excluded_note}" if reason else excluded_note
    if used_match is opts.header_match and relative.reason:
        reason = f"{relative.reason}; {reason}" if reason else relative.reason
    if refine_note:
        reason = f"{reason}; {refine_note}" if reason else refine_note

    wcsname: str | None = None
    if write:
        for path in paths:
            rootname = _rootname(path)
            if absolute is None and rootname in refused:
                continue  # its header WCS stays as it is
            solutions = {extver: w for (root, extver), w in final_wcs.items() if root == rootname}
            keywords = {
                "RELGEOM": relative.fitgeom,
                "RELMATCH": n_matches,
                "FITGEOM": absolute.fitgeom if absolute else relative.fitgeom,
                "NMATCHES": absolute.n_matches if absolute else n_matches,
            }
            wcsname = write_wcs(path, solutions, label=label, keywords=keywords)
    log.info("visit %s: %s (%s), rms %.3f px, %d matches", visit, status, fitgeom, rms_px, n_matches)
    return AlignmentResult(
        visit=visit,
        status=status,  # type: ignore[arg-type]
        catalog=catalog,
        fit_geometry=fitgeom,
        n_matches=n_matches,
        rms_px=rms_px,
        wcsname=wcsname,
        reason=reason,
        per_exposure=per_exposure,
    )
