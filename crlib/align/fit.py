"""tweakwcs fits: relative alignment of a visit's exposures and absolute fit to a reference catalog.

As drizzlepac's single-visit-mosaic processing does, every chip gets a ``FITSWCSCorrector`` whose
catalog holds its sources; the chips of one exposure share a ``group_id`` so they move together.
Matching is ``XYXYMatch`` with a 2-D histogram pre-match; the fit geometry falls back
``rscale`` -> ``rshift`` -> ``shift`` when there are too few matches for the richer model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Fit geometries tried in order, with the minimum number of matches each needs: drizzlepac SVM
#: (``pars/hap_pars/svm_parameters/acs/wfc/acs_wfc_alignment_all.json``) asks 12 for ``rscale``
#: (``mosaic_relgeom_list``/``mosaic_fitgeom_list``) and never fits on fewer than 4
#: (``MIN_FIT_MATCHES``); it has no ``rshift`` step, ours sits between the two.
FITGEOM_FALLBACK: tuple[tuple[str, int], ...] = (("rscale", 12), ("rshift", 8), ("shift", 4))


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """``XYXYMatch`` settings, in pixels of the tangent plane (FITSWCSCorrector units).

    Defaults follow drizzlepac's ``match_relative_fit`` (2-D histogram, tolerance 2); the search
    radius is sized for header errors of a few arcsec.
    """

    searchrad: float = 60.0
    separation: float = 1.0
    tolerance: float = 2.0
    use2dhist: bool = True


@dataclass(slots=True)
class ChipCorrector:
    """Inputs for one chip: the file/extension and its source catalog."""

    path: Path
    rootname: str
    sci_extver: int
    catalog: Any  # astropy Table with x, y (0-based pixels)
    wcs: Any = None  # stwcs HSTWCS as read from the file


@dataclass(frozen=True, slots=True)
class FitOutcome:
    """Result of one (relative or absolute) fit.

    Attributes
    ----------
    success
        Every group that had to be fitted was fitted.
    fitgeom
        Geometry that was used (``None`` when nothing could be fitted).
    n_matches
        Smallest number of matches over the fitted groups.
    rms_px
        Match-weighted 2-D RMS of the fit residuals, pixels.
    wcs
        ``{(rootname, sci_extver): corrected HSTWCS}``.
    per_exposure
        ``{rootname: {"n_matches", "n_fit", "min_matches", "rms_px", "shift_x", "shift_y",
        "rotation_deg", "scale"}}``: ``n_matches`` pairs found, ``n_fit`` of them left after sigma
        clipping, ``min_matches`` the rule's minimum for the geometry (:data:`FITGEOM_FALLBACK`).
    reason
        Why the fit failed or fell back.
    """

    success: bool
    fitgeom: str | None
    n_matches: int
    rms_px: float | None
    wcs: dict[tuple[str, int], Any] = field(default_factory=dict)
    per_exposure: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str | None = None


def _make_correctors(
    chips: Sequence[ChipCorrector], wcs: dict[tuple[str, int], Any], group: str | None
) -> list:
    from astropy.table import Table
    from tweakwcs.correctors import FITSWCSCorrector

    correctors = []
    for chip in chips:
        catalog = Table(
            {"x": np.asarray(chip.catalog["x"], float), "y": np.asarray(chip.catalog["y"], float)}
        )
        meta = {
            "catalog": catalog,
            "name": f"{chip.rootname}[SCI,{chip.sci_extver}]",
            "group_id": group if group is not None else chip.rootname,
            "rootname": chip.rootname,
            "chip": chip.sci_extver,
        }
        correctors.append(FITSWCSCorrector(wcs[(chip.rootname, chip.sci_extver)].deepcopy(), meta=meta))
    return correctors


def _summarise(
    correctors: list, fitgeom: str, minobj: int
) -> tuple[bool, int, float | None, dict[str, dict[str, float]], str | None]:
    """Per-exposure fit facts; a group whose sigma clipping left fewer than ``minobj`` pairs fails.

    tweakwcs checks ``minobj`` on the matches before clipping; its clipping stops only at the
    geometry's mathematical minimum (2 for ``rscale``), so a fit accepted on 12 matches could rest
    on fewer. The rule applies to the pairs the fit actually used.
    """
    per_exposure: dict[str, dict[str, float]] = {}
    failures = []
    for corrector in correctors:
        info = corrector.meta.get("fit_info", {})
        status = str(info.get("status", "FAILED: no fit information"))
        rootname = corrector.meta["rootname"]
        if status == "REFERENCE":
            per_exposure.setdefault(rootname, {"n_matches": 0.0, "rms_px": 0.0, "reference": 1.0})
            continue
        if status != "SUCCESS":
            failures.append(f"{corrector.meta['name']}: {status}")
            continue
        if rootname in per_exposure:
            continue
        fitmask = info.get("fitmask")
        n_fit = int(np.count_nonzero(fitmask)) if fitmask is not None else int(info.get("nmatches", 0))
        if n_fit < minobj:
            failures.append(
                f"{corrector.meta['name']}: {n_fit} of {info.get('nmatches', 0)} matches left after "
                f"clipping, fewer than {minobj}"
            )
            continue
        shift = np.asarray(info.get("shift", (0.0, 0.0)), float)
        rot = info.get("<rot>", 0.0)
        per_exposure[rootname] = {
            "n_matches": float(info.get("nmatches", 0)),
            "n_fit": float(n_fit),
            "min_matches": float(minobj),
            "rms_px": float(info.get("rmse", math.nan)),
            "shift_x": float(shift[0]),
            "shift_y": float(shift[1]),
            "rotation_deg": float(np.mean(np.asarray(rot, dtype=float))),
            "scale": float(info.get("<scale>", 1.0)),
        }
    fitted = [v for v in per_exposure.values() if not v.get("reference")]
    if failures or not fitted:
        reason = "; ".join(failures) if failures else "no exposure could be fitted"
        return False, 0, None, per_exposure, f"{fitgeom}: {reason}"
    n_min = int(min(v["n_matches"] for v in fitted))
    total = sum(v["n_matches"] for v in fitted)
    rms = math.sqrt(sum(v["n_matches"] * v["rms_px"] ** 2 for v in fitted) / total) if total else None
    return True, n_min, rms, per_exposure, None


#: tweakwcs ``group_bb_policy``: each exposure's footprint as the convex hull of its chips' corners,
#: not their exact union. tweakwcs uses the footprints only to order the images by overlap and to
#: decide whether to grow the reference catalog; this module keeps the user's order
#: (``enforce_user_order``) and a fixed reference catalog (``expand_refcat=False``), so no fit
#: changes, and the exact unions cost spherical_geometry ~0.4 s per call (a full-size 3-exposure
#: visit's relative fit and its refinement: 2.5 -> 1.7 s).
GROUP_FOOTPRINT_POLICY = 0


def fit_with_fallback(
    chips: Sequence[ChipCorrector],
    wcs: dict[tuple[str, int], Any],
    *,
    refcat: Any = None,
    match: MatchOptions | None = None,
    fitgeoms: Sequence[tuple[str, int]] = FITGEOM_FALLBACK,
    single_group: bool = False,
) -> FitOutcome:
    """Align chips with tweakwcs, trying each fit geometry until one succeeds for every group.

    Parameters
    ----------
    chips
        Chips with catalogs (at least two exposures when ``refcat`` is ``None``).
    wcs
        Starting WCS per ``(rootname, sci_extver)``; never modified.
    refcat
        Absolute reference catalog (astropy Table with ``RA``/``DEC``, degrees) or ``None`` for a
        relative fit in which tweakwcs picks the reference exposure.
    match
        Matching options.
    fitgeoms
        ``(fitgeom, minimum matches)`` in order of preference.
    single_group
        Fit all chips as one rigid group (absolute fit after a relative fit).

    Returns
    -------
    FitOutcome
    """
    from tweakwcs import align_wcs
    from tweakwcs.imalign import NotEnoughCatalogs
    from tweakwcs.matchutils import XYXYMatch

    opts = match or MatchOptions()
    reasons = []
    for fitgeom, minobj in fitgeoms:
        correctors = _make_correctors(chips, wcs, "visit" if single_group else None)
        matcher = XYXYMatch(
            searchrad=opts.searchrad,
            separation=opts.separation,
            tolerance=opts.tolerance,
            use2dhist=opts.use2dhist,
        )
        try:
            align_wcs(
                correctors,
                refcat=refcat,
                match=matcher,
                fitgeom=fitgeom,
                minobj=minobj,
                nclip=3,
                sigma=(3.0, "rmse"),
                enforce_user_order=True,
                expand_refcat=False,
                group_bb_policy=GROUP_FOOTPRINT_POLICY,
            )
        except NotEnoughCatalogs as exc:
            return FitOutcome(False, None, 0, None, reason=f"tweakwcs: {exc}")
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
            reasons.append(f"{fitgeom}: tweakwcs failed ({exc})")
            continue
        ok, n_matches, rms, per_exposure, reason = _summarise(correctors, fitgeom, minobj)
        if ok:
            new_wcs = {(c.meta["rootname"], c.meta["chip"]): c.wcs for c in correctors}
            note = "; ".join(reasons) if reasons else None
            return FitOutcome(True, fitgeom, n_matches, rms, new_wcs, per_exposure, note)
        reasons.append(reason or f"{fitgeom}: failed")
        log.info("fit geometry %s failed (%s); falling back", fitgeom, reason)
    return FitOutcome(False, None, 0, None, reason="; ".join(reasons))
