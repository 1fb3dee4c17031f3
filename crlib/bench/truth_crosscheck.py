"""Both truth methods on undithered (CR-SPLIT) visits: ``crlib bench truth --method multiframe``.

On an undithered visit both methods apply: driz_cr (drizzle truth) and the stack statistics
(multi-frame truth). For each simulated CR-SPLIT visit we run both on the same files and report

* each method's recall (> 50 e-), false-positive rate and star-core contamination against the
  simulator's injected CRs (:func:`crlib.bench.truth_scoring.mask_fidelity`),
* how well the two masks agree on the pixels both call valid (:func:`truth_agreement`), exactly
  and within one pixel (the methods differ most on a CR's faint edge pixels),
* the wall time of each method.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crlib.bench.truth_report import artefact_lines
from crlib.profiles import FIELD_TYPES
from crlib.truth.product import read_truth_product

if TYPE_CHECKING:
    from crlib.simulate.effects import SimEffects

log = logging.getLogger(__name__)

#: Targets of the multi-frame truth on simulated CR-SPLIT visits (the drizzle truth's targets, and
#: agreement between the methods: share of either mask's CR pixels the other flags within 1 px).
TARGETS = {
    "recall_50e": 0.93,
    "false_positive_rate": 1e-4,
    "star_core_contamination": 0.01,
    "agreement_within_1px": 0.85,
}


def truth_agreement(first: Path, second: Path) -> dict[str, float]:
    """Agreement of two ``_crtruth.fits`` products of one exposure, on pixels valid in both.

    Parameters
    ----------
    first, second
        Truth products (e.g. multi-frame and drizzle) of the same exposure.

    Returns
    -------
    dict
        ``first_cr_pixels``, ``second_cr_pixels`` (counts over commonly valid pixels);
        ``first_in_second`` / ``second_in_first``: share of one mask's CR pixels the other flags
        (exactly, and ``*_1px`` within one pixel); ``jaccard``: intersection over union.
    """
    from scipy.ndimage import binary_dilation

    _, a_masks = read_truth_product(first)
    _, b_masks = read_truth_product(second)
    grow = np.ones((3, 3), dtype=bool)
    totals = dict.fromkeys(("a", "b", "ab", "union", "a_in_b_1px", "b_in_a_1px"), 0)
    for extver in sorted(set(a_masks) & set(b_masks)):
        a_cr, a_valid = a_masks[extver]
        b_cr, b_valid = b_masks[extver]
        valid = a_valid.astype(bool) & b_valid.astype(bool)
        a = a_cr.astype(bool) & valid
        b = b_cr.astype(bool) & valid
        totals["a"] += int(a.sum())
        totals["b"] += int(b.sum())
        totals["ab"] += int((a & b).sum())
        totals["union"] += int((a | b).sum())
        totals["a_in_b_1px"] += int((a & binary_dilation(b, structure=grow)).sum())
        totals["b_in_a_1px"] += int((b & binary_dilation(a, structure=grow)).sum())

    def share(part: int, whole: int) -> float:
        return part / whole if whole else float("nan")

    return {
        "first_cr_pixels": float(totals["a"]),
        "second_cr_pixels": float(totals["b"]),
        "first_in_second": share(totals["ab"], totals["a"]),
        "second_in_first": share(totals["ab"], totals["b"]),
        "first_in_second_1px": share(totals["a_in_b_1px"], totals["a"]),
        "second_in_first_1px": share(totals["b_in_a_1px"], totals["b"]),
        "jaccard": share(totals["ab"], totals["union"]),
    }


def crosscheck_visit(visit_dir: Path, scratch: Path) -> dict[str, Any]:
    """Multi-frame and drizzle truth on one simulated undithered visit, scored and compared.

    Parameters
    ----------
    visit_dir
        A simulated visit (``truth/visit.json`` and ``truth/*_simtruth.fits`` beside the FLCs).
    scratch
        Working directories go to ``scratch/<method>/<visit>``.

    Returns
    -------
    dict
        Per method: statuses, reasons, mean fidelity numbers and seconds; ``agreement``: mean of
        :func:`truth_agreement` (multi-frame first) over exposures with both products.
    """
    from crlib.align.options import AlignOptions
    from crlib.bench.artefact_fidelity import excluded_counts, score_artefacts
    from crlib.bench.truth_scoring import FIDELITY_KEYS, mean_finite, score_against_simulator
    from crlib.formats.exposures import find_exposures, read_exposure_info
    from crlib.truth.options import TruthOptions
    from crlib.truth.visit import build_visit_truth

    visit_dir = Path(visit_dir)
    info = json.loads((visit_dir / "truth" / "visit.json").read_text())
    exposures = [read_exposure_info(p) for p in find_exposures(visit_dir)]
    options = TruthOptions(align_options=AlignOptions(query_catalogs=False))
    report: dict[str, Any] = {"visit": visit_dir.name, "field_type": info.get("field_type")}
    products: dict[str, dict[str, Path]] = {}
    for method in ("multiframe", "drizzle"):
        work_dir = scratch / method / visit_dir.name
        start = time.perf_counter()
        truth = build_visit_truth(visit_dir, work_dir=work_dir, method=method, options=options)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        products[method] = {r.rootname: Path(r.path) for r in truth.exposures if r.path is not None}
        fidelity = score_against_simulator(visit_dir, truth.exposures, exposures)
        report[method] = {
            "artefacts": score_artefacts(visit_dir, truth.exposures, exposures),
            "excluded": excluded_counts(truth.exposures),
            "statuses": {r.rootname: r.status for r in truth.exposures},
            "reasons": {r.rootname: list(r.reasons) for r in truth.exposures if r.reasons},
            "seconds": seconds,
            **{key: mean_finite(fidelity, key) for key in FIDELITY_KEYS},
        }
    shared = sorted(set(products["multiframe"]) & set(products["drizzle"]))
    agreements = [truth_agreement(products["multiframe"][r], products["drizzle"][r]) for r in shared]
    report["agreement"] = {key: mean_finite(agreements, key) for key in (agreements[0] if agreements else {})}
    return report


def run_crosscheck_benchmark(
    scratch: Path,
    *,
    size: Literal["full", "small"] = "full",
    exposures: int = 4,
    seed: int = 7,
    field_types: tuple[str, ...] = FIELD_TYPES,
    effects: SimEffects | None = None,
) -> dict[str, Any]:
    """Simulate one undithered visit per field type and cross-check the two truth methods on each.

    ``effects``: simulator archive effects (default: basic); the report scores each artefact class.
    """
    from crlib.bench.truth import simulate_field_visits

    if exposures < 3:
        raise ValueError(f"the multi-frame method needs >= 3 exposures per visit (got {exposures})")
    scratch = Path(scratch)
    visits = []
    for field_type, visit_dir in simulate_field_visits(
        scratch / "archive-crsplit",
        size=size,
        exposures=exposures,
        seed=seed,
        field_types=field_types,
        dither="none",
        effects=effects,
    ):
        log.info("cross-checking truth methods on %s (%s)", visit_dir.name, field_type)
        visits.append(crosscheck_visit(visit_dir, scratch / "runs-crsplit"))
    return {
        "targets": TARGETS,
        "size": size,
        "exposures": exposures,
        "effects": effects.as_dict() if effects is not None else None,
        "visits": visits,
    }


def format_crosscheck(report: dict[str, Any]) -> str:
    """Human-readable table of :func:`run_crosscheck_benchmark` output."""
    t = report["targets"]
    lines = [
        f"truth methods on undithered CR-SPLIT visits ({report['size']}, {report['exposures']} exposures); "
        f"multi-frame targets: recall(>50e-) >= {t['recall_50e']}, FPR <= {t['false_positive_rate']}, "
        f"star cores <= {t['star_core_contamination']}, agreement with drizzle (1 px) >= "
        f"{t['agreement_within_1px']}",
        f"{'field type':18s} {'method':10s} {'rec50':>6s} {'rec3s':>6s} {'FPR':>9s} {'cores':>7s} "
        f"{'seconds':>8s}  status",
    ]
    for v in report["visits"]:
        for method in ("multiframe", "drizzle"):
            m = v[method]
            lines.append(
                f"{v['field_type']!s:18s} {method:10s} {m['recall_50e']:6.3f} {m['recall_3sigma']:6.3f} "
                f"{m['false_positive_rate']:9.2e} {m['star_core_contamination']:7.4f} {m['seconds']:8.1f}  "
                f"{','.join(sorted(set(m['statuses'].values())))}"
            )
        for method in ("multiframe", "drizzle"):
            extra = artefact_lines(v[method])
            if extra:
                lines.append(f"{'':18s} {method}:")
                lines.extend(extra)
        a = v["agreement"]
        if a:
            lines.append(
                f"{'':18s} agreement: multi-frame CR px flagged by drizzle {a['first_in_second']:.3f} "
                f"({a['first_in_second_1px']:.3f} within 1 px), drizzle by multi-frame "
                f"{a['second_in_first']:.3f} ({a['second_in_first_1px']:.3f}), Jaccard {a['jaccard']:.3f}"
            )
    return "\n".join(lines)
