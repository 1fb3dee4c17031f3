"""Scoring a truth-stage run against the simulator: alignment error, recall, FPR, star cores.

What ``crlib bench truth`` (:mod:`crlib.bench.truth`) and the truth cross-check
(:mod:`crlib.bench.truth_crosscheck`) report about a run's *correctness*, apart from its timing:

* :func:`mask_fidelity`: one exposure's product against the simulator's ``*_simtruth.fits``
  (recall above 50 e- and 3 sigma, false-positive rate, also outside the 1-px ring around true
  CRs, star-core contamination);
* :func:`alignment_check` / :func:`wcs_correction_error`: the WCS the stage used against the
  pointing the simulator injected;
* :func:`visit_fidelity`: all of it for one visit, as the benchmark reports it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crlib.bench.artefact_fidelity import excluded_counts, score_artefacts
from crlib.profiles import InstrumentProfile
from crlib.truth.product import read_truth_product
from crlib.truth.quality import star_core_mask

if TYPE_CHECKING:
    from crlib.formats.exposures import ExposureInfo
    from crlib.records import AlignmentResult, TruthResult
    from crlib.truth.options import VisitTruth

__all__ = [
    "FIDELITY_KEYS",
    "alignment_check",
    "injected_shifts",
    "mask_fidelity",
    "mean_finite",
    "score_against_simulator",
    "visit_fidelity",
    "wcs_correction_error",
]

log = logging.getLogger(__name__)


def wcs_correction_error(
    original: Path, aligned: Path, expected_shift: dict[int, tuple[float, float]], *, step: int = 64
) -> float:
    """RMS (pixels) of the difference between the fitted WCS correction and the expected shift.

    For a grid of pixels of every chip, the aligned WCS maps the pixel to the sky and the original
    header WCS maps it back: the displacement is the correction the fit applied, which should
    equal the expected shift (injected error, relative to the reference exposure for a relative fit).
    """
    from astropy.io import fits
    from stwcs.wcsutil import HSTWCS

    errors = []
    with fits.open(original, memmap=False) as before, fits.open(aligned, memmap=False) as after:
        for extver, (ex, ey) in expected_shift.items():
            w0 = HSTWCS(before, ext=("SCI", extver))
            w1 = HSTWCS(after, ext=("SCI", extver))
            nx, ny = w0.pixel_shape
            gx, gy = np.meshgrid(np.arange(0, nx, step, dtype=float), np.arange(0, ny, step, dtype=float))
            ra, dec = w1.all_pix2world(gx.ravel(), gy.ravel(), 0)
            x0, y0 = w0.all_world2pix(ra, dec, 0)
            # a star truly at header pixel p + e is put by the aligned WCS where the header put p:
            # the aligned WCS's pixel for a sky point = header pixel + correction
            cx, cy = gx.ravel() - x0, gy.ravel() - y0
            errors.append((cx - ex) ** 2 + (cy - ey) ** 2)
    return float(np.sqrt(np.mean(np.concatenate(errors))))


def mask_fidelity(
    crtruth: Path, simtruth: Path, *, read_noise_e: float, sky_e: float, profile: InstrumentProfile
) -> dict[str, float]:
    """Recall / false-positive rate / star-core contamination of one exposure's truth product.

    Parameters
    ----------
    crtruth
        Our ``<rootname>_crtruth.fits``.
    simtruth
        The simulator's ``<rootname>_simtruth.fits`` (CRMASK, CRCHARGE, MODEL per chip).
    read_noise_e, sky_e
        For the 3-sigma charge threshold: sigma = sqrt(read_noise² + model).
    profile
        Saturation level for star-core detection.
    """
    from astropy.io import fits
    from scipy.ndimage import binary_dilation

    _, masks = read_truth_product(crtruth)
    totals = dict.fromkeys(("tp50", "n50", "tp3s", "n3s", "fp", "fp_ring", "neg", "core", "core_flag"), 0)
    with fits.open(simtruth, memmap=False) as sim:
        for extver, (ours, valid) in masks.items():
            valid_b = valid.astype(bool)
            flagged = ours.astype(bool) & valid_b
            true_cr = np.asarray(sim["CRMASK", extver].data).astype(bool)
            charge = np.asarray(sim["CRCHARGE", extver].data, dtype=np.float32)
            model = np.asarray(sim["MODEL", extver].data, dtype=np.float32)
            sigma = np.sqrt(read_noise_e**2 + np.clip(model, 0, None))
            above50 = true_cr & (charge > 50) & valid_b
            above3s = true_cr & (charge > 3 * sigma) & valid_b
            totals["tp50"] += int((flagged & above50).sum())
            totals["n50"] += int(above50.sum())
            totals["tp3s"] += int((flagged & above3s).sum())
            totals["n3s"] += int(above3s.sum())
            negative = valid_b & ~true_cr
            totals["neg"] += int(negative.sum())
            totals["fp"] += int((flagged & negative).sum())
            ring = binary_dilation(true_cr, structure=np.ones((3, 3), bool))
            totals["fp_ring"] += int((flagged & negative & ~ring).sum())
            core = star_core_mask(model, valid=negative, nsigma=50.0, saturation_e=profile.saturation_e)
            core &= negative
            totals["core"] += int(core.sum())
            totals["core_flag"] += int((core & flagged).sum())
    return {
        "recall_50e": totals["tp50"] / totals["n50"] if totals["n50"] else float("nan"),
        "recall_3sigma": totals["tp3s"] / totals["n3s"] if totals["n3s"] else float("nan"),
        "false_positive_rate": totals["fp"] / totals["neg"] if totals["neg"] else float("nan"),
        "false_positive_rate_outside_grow_ring": totals["fp_ring"] / totals["neg"]
        if totals["neg"]
        else float("nan"),
        "star_core_pixels": float(totals["core"]),
        "star_core_contamination": totals["core_flag"] / totals["core"] if totals["core"] else float("nan"),
        "cr_pixels_above_50e": float(totals["n50"]),
    }


#: The per-exposure :func:`mask_fidelity` numbers the benchmarks average over a visit.
FIDELITY_KEYS = (
    "recall_50e",
    "recall_3sigma",
    "false_positive_rate",
    "false_positive_rate_outside_grow_ring",
    "star_core_contamination",
)


def score_against_simulator(
    visit_dir: Path, results: Sequence[TruthResult], exposures: Sequence[ExposureInfo]
) -> list[dict[str, float]]:
    """:func:`mask_fidelity` of every result with a product, against ``visit_dir/truth/*_simtruth.fits``.

    ``exposures`` supply each exposure's read noise and profile (matched by rootname).
    """
    by_rootname = {e.rootname: e for e in exposures}
    scores = []
    for result in results:
        if result.path is None:
            continue
        exposure = by_rootname[result.rootname]
        simtruth = Path(visit_dir) / "truth" / f"{result.rootname}_simtruth.fits"
        scores.append(
            mask_fidelity(
                Path(result.path),
                simtruth,
                read_noise_e=exposure.read_noise_e,
                sky_e=0.0,
                profile=exposure.profile,
            )
        )
    return scores


def mean_finite(rows: Sequence[dict[str, float]], key: str) -> float:
    """Mean of ``row[key]`` over the rows where it is finite (NaN when none is)."""
    values = [row[key] for row in rows if np.isfinite(row[key])]
    return float(np.mean(values)) if values else float("nan")


def injected_shifts(visit_json: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{rootname: (dx, dy)}`` injected header errors in pixels, from the simulator's visit.json."""
    shifts: dict[str, tuple[float, float]] = {}
    for entry in visit_json.get("exposures", []):
        error = entry.get("pointing_error_px") or entry.get("error_px") or [0.0, 0.0]
        shifts[str(entry["rootname"]).lower()] = (float(error[0]), float(error[1]))
    return shifts


def alignment_check(
    visit_dir: Path, work_dir: Path, alignment: AlignmentResult | None, rootnames: Sequence[str]
) -> dict[str, Any]:
    """True alignment error of every exposure's WCS after the truth stage, and the fit behind it.

    The WCS of each working copy (fitted, or the header WCS where the fit was refused or failed) is
    compared on a 64-px grid of every chip with the pointing the simulator injected: shift, roll
    and plate scale (:func:`crlib.bench.align_fidelity.alignment_errors`). A relative fit is judged
    in its reference exposure's frame (the first rootname when nothing was fitted), an absolute one
    on the true sky.

    Returns
    -------
    dict
        ``reference``, ``absolute``, ``rule`` (the minimum matches per geometry), ``rule_ok``
        (no accepted fit used fewer pairs than its geometry's minimum) and per exposure:
        ``rms_px``/``max_px`` (true error of the WCS used), ``header_rms_px`` (of its header WCS),
        ``injected`` (shift, roll, scale), ``fitted`` (whether the fit was taken), ``n_matches``,
        ``n_fit``, ``min_matches``, ``fit_rms_px``, ``header_kept``, ``reference`` and, where the
        refinement pass on the looser catalogs was applied, the same as ``refine_*``.
    """
    from crlib.align.fit import FITGEOM_FALLBACK
    from crlib.bench.align_fidelity import alignment_errors, simulated_pointings

    info = json.loads((Path(visit_dir) / "truth" / "visit.json").read_text())
    injected = {k: p.injected for k, p in simulated_pointings(info).items()}
    per = alignment.per_exposure if alignment is not None else {}
    aligned = alignment is not None and alignment.status.startswith("aligned")
    absolute = alignment is not None and alignment.status == "aligned_absolute"
    reference = next((r for r, v in per.items() if v.get("reference")), None) or sorted(rootnames)[0]
    files = {r: Path(work_dir) / f"{r}_flc.fits" for r in rootnames}
    files = {r: f for r, f in files.items() if f.exists()}
    errors = alignment_errors(Path(visit_dir), files, reference=None if absolute else reference)
    rule = dict(FITGEOM_FALLBACK)
    exposures: dict[str, dict[str, Any]] = {}
    rule_ok = True
    for rootname in rootnames:
        entry = per.get(rootname, {})
        taken = not entry.get("reference") and not entry.get("header_kept")
        fitted = aligned and taken and "n_matches" in entry
        row: dict[str, Any] = {
            **errors.get(rootname, {}),
            "injected": injected.get(rootname),
            "reference": rootname == reference,
            "fitted": bool(fitted),
            "header_kept": bool(entry.get("header_kept")),
        }
        if "n_matches" in entry and not entry.get("reference"):
            row.update(
                n_matches=int(entry["n_matches"]),
                n_fit=int(entry.get("n_fit", entry["n_matches"])),
                min_matches=int(entry.get("min_matches", 0)),
                fit_rms_px=float(entry.get("rms_px", float("nan"))),
            )
            if fitted:
                geometry = (alignment.fit_geometry or "").split("+")[0] if alignment else ""
                rule_ok &= row["n_fit"] >= rule.get(geometry, 0)
        if "refine_n_matches" in entry:
            row.update(
                refine_n_matches=int(entry["refine_n_matches"]),
                refine_n_fit=int(entry["refine_n_fit"]),
                refine_min_matches=int(entry["refine_min_matches"]),
                refine_rms_px=float(entry["refine_rms_px"]),
            )
            rule_ok &= row["refine_n_fit"] >= row["refine_min_matches"] > 0
        exposures[rootname] = row
    return {
        "reference": None if absolute else reference,
        "absolute": absolute,
        "rule": rule,
        "rule_ok": bool(rule_ok),
        "exposures": exposures,
    }


def visit_fidelity(visit_dir: Path, truth: VisitTruth, exposures: Sequence[ExposureInfo]) -> dict[str, Any]:
    """How right one truth-stage run is, against what the simulator put into ``visit_dir``.

    Parameters
    ----------
    visit_dir
        The simulated visit (``truth/visit.json``, ``truth/*_simtruth.fits`` beside the FLCs).
    truth
        The stage's result on it (:func:`crlib.truth.visit.build_visit_truth`).
    exposures
        The visit's exposures (:func:`crlib.formats.exposures.read_exposure_info`).

    Returns
    -------
    dict
        Alignment (status, fit rms, true error in px against the injected pointing, geometry,
        reason, per-exposure check), each exposure's status and reasons, the mean of every
        :data:`FIDELITY_KEYS` number, and the artefact classes' scores and exclusions.
    """
    visit_dir = Path(visit_dir)
    info = json.loads((visit_dir / "truth" / "visit.json").read_text())
    alignment = truth.alignment
    align_check = alignment_check(visit_dir, truth.work_dir, alignment, [e.rootname for e in exposures])
    align_errors = {k: v["rms_px"] for k, v in align_check["exposures"].items()}
    fidelity = score_against_simulator(visit_dir, truth.exposures, exposures)
    return {
        "artefacts": score_artefacts(visit_dir, truth.exposures, exposures),
        "excluded": excluded_counts(truth.exposures),
        "visit": visit_dir.name,
        "field_type": info.get("field_type"),
        "alignment_status": alignment.status if alignment else None,
        "alignment_fit_rms_px": alignment.rms_px if alignment else None,
        "alignment_error_rms_px": max(align_errors.values()) if align_errors else None,
        "alignment_fit_geometry": alignment.fit_geometry if alignment else None,
        "alignment_reason": alignment.reason if alignment else None,
        "alignment_check": align_check,
        "injected_error_px": {k: list(v) for k, v in injected_shifts(info).items()},
        "statuses": {r.rootname: r.status for r in truth.exposures},
        "reasons": {r.rootname: list(r.reasons) for r in truth.exposures if r.reasons},
        **{key: mean_finite(fidelity, key) for key in FIDELITY_KEYS},
    }
