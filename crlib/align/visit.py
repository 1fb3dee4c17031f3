"""Align one visit: catalogs -> tweakwcs relative fit -> absolute fit with fallbacks -> WCS update.

The expected outcomes (too few sources, one exposure, no catalog reachable) are returned as an
:class:`~crlib.records.AlignmentResult` status with a reason; only bad input raises.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crlib.align.fit import ChipCorrector, FitOutcome, MatchOptions, fit_with_fallback
from crlib.align.options import AlignOptions
from crlib.align.reference_field import reference_catalog, restrict_to_footprint
from crlib.align.verify import FitLimits, HeaderComparison, compare_with_header, verify_relative_fit
from crlib.align.visit_sources import VisitCatalogs, visit_catalogs
from crlib.align.wcsupdate import write_wcs
from crlib.formats.flc import rootname_from_path
from crlib.profiles import InstrumentProfile
from crlib.records import AlignmentResult

log = logging.getLogger(__name__)


def _read_wcs(path: Path, extvers: Sequence[int]) -> dict[int, Any]:
    from astropy.io import fits
    from stwcs.wcsutil import HSTWCS

    with fits.open(path, memmap=False) as hdul:
        return {extver: HSTWCS(hdul, ext=("SCI", extver)) for extver in extvers}


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


@dataclass(frozen=True, slots=True)
class _VisitInputs:
    """What the fits of a visit start from: the measured exposures' chips, catalogs and header WCS.

    Attributes
    ----------
    paths
        The exposures whose catalogs could be measured (the others are in ``excluded_note``).
    chips
        One :class:`~crlib.align.fit.ChipCorrector` per chip with ``min_sources`` strict sources.
    loose_chips
        The same chips with the looser refinement catalogs (first ``max_sources`` rows).
    wcs
        Header WCS of every measured chip, ``{(rootname, sci_extver): HSTWCS}``.
    n_sources
        Strict sources per exposure, ``{rootname: count}`` over all its chips.
    excluded_note
        ``left out ...`` for each exposure whose data defeated its catalog ("" when none).
    """

    paths: list[Path]
    chips: list[ChipCorrector]
    loose_chips: list[ChipCorrector]
    wcs: dict[tuple[str, int], Any]
    n_sources: dict[str, int]
    excluded_note: str

    @property
    def sources_note(self) -> dict[str, float]:
        """``n_sources`` as the per-exposure record's float entries."""
        return {k: float(v) for k, v in self.n_sources.items()}


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a visit stays ``not_aligned``, the fit's match count and per-exposure notes to record."""

    reason: str
    n_matches: int = 0
    notes: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """The verification of a relative fit (:func:`_verify`).

    Attributes
    ----------
    refused
        ``{rootname: why}`` of the exposures whose fit is refused (they keep their header WCS).
    header
        Per-exposure header-comparison notes (:func:`_header_note`).
    accepted
        The fit's per-exposure entries of the accepted, non-reference exposures.
    """

    refused: dict[str, str]
    header: dict[str, dict[str, float]]
    accepted: dict[str, dict[str, float]]

    @property
    def refused_note(self) -> str:
        """``rootname: why`` of every refused exposure, ``; ``-separated in rootname order."""
        return "; ".join(f"{k}: {why}" for k, why in sorted(self.refused.items()))


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A relative fit that passed the gate: the fit, the matching it used, its verification."""

    fit: FitOutcome
    match: MatchOptions
    verdict: _Verdict


def _read_inputs(all_paths: Sequence[Path], found: VisitCatalogs, opts: AlignOptions) -> _VisitInputs:
    """Read step: header WCS of every measured chip and the chip catalogs the fits use.

    A chip takes part when its strict catalog (``found.strict``) holds at least ``min_sources``
    sources; its looser catalog (the first ``catalog.max_sources`` rows of ``found.catalogs``) goes
    to the refinement pass. Exposures among ``found.failures`` are left out and named in
    ``excluded_note``.
    """
    excluded = [found.failures[p] for p in all_paths if p in found.failures]
    paths = [p for p in all_paths if p in found.catalogs]
    chips: list[ChipCorrector] = []
    loose_chips: list[ChipCorrector] = []
    wcs: dict[tuple[str, int], Any] = {}
    n_sources: dict[str, int] = {}
    for path in paths:
        rootname = rootname_from_path(path)
        chip_wcs = _read_wcs(path, list(found.catalogs[path]))
        n_sources[rootname] = 0
        for extver, chip_catalog in found.catalogs[path].items():
            wcs[(rootname, extver)] = chip_wcs[extver]
            strict = found.strict[path][extver]
            n_sources[rootname] += len(strict)
            if len(strict) >= opts.min_sources:
                chips.append(ChipCorrector(path, rootname, extver, strict))
                loose = chip_catalog[: opts.catalog.max_sources]
                loose_chips.append(ChipCorrector(path, rootname, extver, loose))
    excluded_note = "; ".join(f"left out {exc}" for exc in excluded)
    return _VisitInputs(paths, chips, loose_chips, wcs, n_sources, excluded_note)


def _gate_inputs(n_exposures: int, inputs: _VisitInputs, opts: AlignOptions) -> _Refusal | None:
    """Gate before any fit: at least two measured exposures, each with a chip of ``min_sources``.

    ``n_exposures`` counts every exposure given, measured or not; returns ``None`` when the visit
    can be fitted.
    """
    if n_exposures < 2:
        return _Refusal("a single exposure: nothing to align relative to")
    if len(inputs.paths) < 2:
        return _Refusal(f"{len(inputs.paths)} exposure(s) with usable pixels: nothing to align relative to")
    usable = {c.rootname for c in inputs.chips}
    if len(usable) < len(inputs.paths):
        poor = sorted(set(inputs.n_sources) - usable)
        return _Refusal(f"too few sources (< {opts.min_sources} per chip) in {', '.join(poor)}")
    return None


def _not_aligned(visit: str, inputs: _VisitInputs, refusal: _Refusal) -> AlignmentResult:
    """The ``not_aligned`` record of a refused visit; every exposure keeps its header WCS."""
    reason = f"{refusal.reason}; {inputs.excluded_note}" if inputs.excluded_note else refusal.reason
    log.info("visit %s: not aligned (%s)", visit, reason)
    per_exposure = {k: {"n_sources": v, **refusal.notes.get(k, {})} for k, v in inputs.sources_note.items()}
    return AlignmentResult(
        visit,
        "not_aligned",
        None,
        None,
        refusal.n_matches,
        None,
        None,
        reason=reason,
        per_exposure=per_exposure,
    )


def _retry_around_header(
    inputs: _VisitInputs, notes: dict[str, dict[str, float]], opts: AlignOptions, *, why: str
) -> FitOutcome | None:
    """Compute step: the relative fit again, matched within ``header_match`` of the header WCS.

    Tried only when the header WCSs already pair every exposure's sources beyond chance
    (``notes``, :func:`_pairs_count`); returns ``None`` when they do not. The wide search's 2-D
    histogram peak can be pulled pixels off by the cosmic-ray chance pairs of a sparse field, which
    makes the wide-search fit fail or be refused. A successful retry's reason is ``why`` followed
    by ``matched within <searchrad> px of the header WCS``; a failed one is returned as it is.
    """
    if not notes or not all(_pairs_count(note, opts.fit_limits) for note in notes.values()):
        return None
    retry = fit_with_fallback(inputs.chips, inputs.wcs, match=opts.header_match)
    if not retry.success:
        return retry
    searchrad = opts.header_match.searchrad
    return dataclasses.replace(retry, reason=f"{why}; matched within {searchrad:g} px of the header WCS")


def _fit_relative(
    inputs: _VisitInputs, opts: AlignOptions, *, profile: InstrumentProfile, visit: str
) -> tuple[FitOutcome, MatchOptions] | _Refusal:
    """Compute step: the wide-search relative fit, or the retry around the header WCS when it fails.

    Returns the successful fit with the matching it used, or the refusal when both fail (the
    header-only comparison of every exposure with the first goes into the record: the truth gate
    judges the header WCS by it).
    """
    relative = fit_with_fallback(inputs.chips, inputs.wcs, match=opts.relative_match)
    if relative.success:
        return relative, opts.relative_match
    header_only = _header_only(
        inputs.chips, inputs.wcs, tolerance_px=opts.header_match.tolerance, profile=profile
    )
    wide = relative.reason
    retry = _retry_around_header(inputs, header_only, opts, why=f"wide search failed ({wide})")
    if retry is None:
        return _Refusal(f"relative fit failed: {wide}; header WCS kept", relative.n_matches, header_only)
    if not retry.success:
        return _Refusal(
            f"relative fit failed: wide search: {wide}; around the header WCS: {retry.reason}; "
            "header WCS kept",
            retry.n_matches,
            header_only,
        )
    log.info("visit %s: wide search failed (%s); matched around the header WCS", visit, wide)
    return retry, opts.header_match


def _verify(
    fit: FitOutcome, match: MatchOptions, inputs: _VisitInputs, opts: AlignOptions, profile: InstrumentProfile
) -> _Verdict:
    """Gate step: :func:`~crlib.align.verify.verify_relative_fit` of each exposure's fit."""
    refusals, comparisons = verify_relative_fit(
        fit,
        inputs.chips,
        inputs.wcs,
        searchrad_px=match.searchrad,
        tolerance_px=match.tolerance,
        scale_arcsec=profile.plate_scale_arcsec,
        limits=opts.fit_limits,
    )
    notes = {k: _header_note(c, kept=k in refusals) for k, c in comparisons.items()}
    for rootname in refusals:
        notes.setdefault(rootname, {"header_kept": 1.0})
    kept = {k: v for k, v in fit.per_exposure.items() if not v.get("reference") and k not in refusals}
    return _Verdict(refusals, notes, kept)


def _gate_relative(
    fit: FitOutcome,
    match: MatchOptions,
    inputs: _VisitInputs,
    opts: AlignOptions,
    *,
    profile: InstrumentProfile,
    visit: str,
) -> _Accepted | _Refusal:
    """Gate step: accept the relative fit for the exposures it verifies, refuse it when it fits none.

    A wide-search fit refused for every exposure while the header WCSs already line up the sources
    is retried around the header WCS (:func:`_retry_around_header`), as when the wide search fails
    outright; the retry replaces it when it is accepted for some exposure.
    """
    verdict = _verify(fit, match, inputs, opts, profile)
    if not verdict.accepted and match is opts.relative_match:
        why = f"wide-search {fit.fitgeom} fit refused ({verdict.refused_note})"
        retry = _retry_around_header(inputs, verdict.header, opts, why=why)
        if retry is not None and retry.success:
            second = _verify(retry, opts.header_match, inputs, opts, profile)
            if second.accepted:
                log.info("visit %s: %s; matched around the header WCS", visit, why)
                return _Accepted(retry, opts.header_match, second)
    if not verdict.accepted:
        return _Refusal(
            f"header WCS kept: the {fit.fitgeom} relative fit is refused for every exposure "
            f"({verdict.refused_note})",
            fit.n_matches,
            verdict.header,
        )
    return _Accepted(fit, match, verdict)


def _absolute_fit(
    inputs: _VisitInputs, aligned_wcs: dict[tuple[str, int], Any], opts: AlignOptions
) -> tuple[FitOutcome | None, str | None, str]:
    """Compute step: fit the relatively aligned visit to a reference catalog.

    Returns the successful absolute fit and its catalog's name (``None, None`` when no catalog, too
    few catalog sources in the footprint or a failed fit) and a note on the catalog chain and the fit.
    """
    refcat, catalog_note = reference_catalog(opts, aligned_wcs)
    if refcat is None:
        return None, None, catalog_note
    subset = restrict_to_footprint(refcat, aligned_wcs, margin_px=opts.absolute_match.searchrad)
    if len(subset) < 3:
        return None, None, f"{catalog_note}; only {len(subset)} {refcat.name} sources in the footprint"
    # one group per exposure: a group of all exposures would hold every star three times
    absolute = fit_with_fallback(inputs.chips, aligned_wcs, refcat=subset, match=opts.absolute_match)
    if not absolute.success:
        return None, None, f"{catalog_note}; absolute fit to {refcat.name} failed: {absolute.reason}"
    return absolute, refcat.name, catalog_note


def _match_summary(accepted: dict[str, dict[str, float]]) -> tuple[int, float]:
    """Fewest matches of the accepted exposures and their match-weighted rms (pixels)."""
    n_matches = int(min(v["n_matches"] for v in accepted.values()))
    total = sum(v["n_matches"] for v in accepted.values())
    rms_px = math.sqrt(sum(v["n_matches"] * v["rms_px"] ** 2 for v in accepted.values()) / total)
    return n_matches, rms_px


def _write_solutions(
    paths: Sequence[Path],
    final_wcs: dict[tuple[str, int], Any],
    *,
    skip: Collection[str],
    label: str,
    keywords: dict[str, Any],
) -> str | None:
    """Write step: the fitted WCS of every exposure not in ``skip``; returns the last WCSNAME written."""
    wcsname: str | None = None
    for path in paths:
        rootname = rootname_from_path(path)
        if rootname in skip:
            continue  # its header WCS stays as it is
        solutions = {extver: w for (root, extver), w in final_wcs.items() if root == rootname}
        wcsname = write_wcs(path, solutions, label=label, keywords=keywords)
    return wcsname


def _aligned(
    visit: str,
    inputs: _VisitInputs,
    accepted: _Accepted,
    opts: AlignOptions,
    *,
    profile: InstrumentProfile,
    write: bool,
) -> AlignmentResult:
    """Refine and absolutely fit an accepted relative fit, write the WCS and build the record."""
    relative, verdict = accepted.fit, accepted.verdict
    n_matches, rms_px = _match_summary(verdict.accepted)
    aligned_wcs = dict(inputs.wcs)
    aligned_wcs.update({key: w for key, w in relative.wcs.items() if key[0] not in verdict.refused})
    sources = inputs.sources_note
    per_exposure = {
        k: dict(v, n_sources=sources.get(k, 0.0), **verdict.header.get(k, {}))
        for k, v in relative.per_exposure.items()
    }
    refine_note = _refine(
        inputs.loose_chips,
        aligned_wcs,
        relative,
        verdict.refused,
        per_exposure,
        opts,
        profile.plate_scale_arcsec,
    )
    absolute, catalog, catalog_note = _absolute_fit(inputs, aligned_wcs, opts)
    final_wcs, label, status = aligned_wcs, "FIT_REL_NONE", "aligned_relative"
    fitgeom: str | None = relative.fitgeom
    if absolute is not None:
        final_wcs = {**aligned_wcs, **absolute.wcs}
        label, status = f"FIT_SVM_{catalog}", "aligned_absolute"
        fitgeom = f"{relative.fitgeom}+{absolute.fitgeom}"
        for rootname, info in absolute.per_exposure.items():
            per_exposure.setdefault(rootname, {}).update(
                abs_n_matches=info.get("n_matches", 0.0),
                abs_rms_px=info.get("rms_px", math.nan),
                abs_shift_x=info.get("shift_x", 0.0),
                abs_shift_y=info.get("shift_y", 0.0),
            )
    reasons = [
        relative.reason if accepted.match is opts.header_match else "",
        "" if absolute is not None else f"kept the relative fit: {catalog_note}",
        f"header WCS kept for {verdict.refused_note}" if verdict.refused else "",
        inputs.excluded_note,
        refine_note or "",
    ]
    wcsname = None
    if write:
        keywords = {
            "RELGEOM": relative.fitgeom,
            "RELMATCH": n_matches,
            "FITGEOM": absolute.fitgeom if absolute else relative.fitgeom,
            "NMATCHES": absolute.n_matches if absolute else n_matches,
        }
        skip = verdict.refused if absolute is None else set()
        wcsname = _write_solutions(inputs.paths, final_wcs, skip=skip, label=label, keywords=keywords)
    log.info("visit %s: %s (%s), rms %.3f px, %d matches", visit, status, fitgeom, rms_px, n_matches)
    return AlignmentResult(
        visit=visit,
        status=status,  # type: ignore[arg-type]
        catalog=catalog,
        fit_geometry=fitgeom,
        n_matches=n_matches,
        rms_px=rms_px,
        wcsname=wcsname,
        reason="; ".join(r for r in reasons if r) or None,
        per_exposure=per_exposure,
    )


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

    The steps: read the catalogs and header WCS (:func:`_read_inputs`), gate the visit
    (:func:`_gate_inputs`), fit (:func:`_fit_relative`), gate the fit per exposure
    (:func:`_gate_relative`), then refine, fit absolutely, write and record (:func:`_aligned`).

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
        The exposures' catalogs from :func:`visit_catalogs` with the same ``options`` (default:
        built here). Exposures among its ``failures`` are left out of the fit and keep their header
        WCS; the reason names them.

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
    inputs = _read_inputs(all_paths, found, opts)
    log.info("visit %s: sources per exposure %s", visit, inputs.n_sources)
    refusal = _gate_inputs(len(all_paths), inputs, opts)
    if refusal is not None:
        return _not_aligned(visit, inputs, refusal)
    fitted = _fit_relative(inputs, opts, profile=profile, visit=visit)
    if isinstance(fitted, _Refusal):
        return _not_aligned(visit, inputs, fitted)
    gated = _gate_relative(*fitted, inputs, opts, profile=profile, visit=visit)
    if isinstance(gated, _Refusal):
        return _not_aligned(visit, inputs, gated)
    return _aligned(visit, inputs, gated, opts, profile=profile, write=write)
