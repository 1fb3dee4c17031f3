"""Fidelity of a truth product per artefact class, against the simulator's ``ARTEFACT`` labels.

For every class of :data:`crlib.simulate.artefacts.ARTEFACT_BITS` (and star cores, found in the
simulator's noiseless model) we count the class's pixels that are not CRs, how many of them the
truth labels CR (flagged and valid), and how many stay valid. The target of issue 13: at most 1 %
of satellite-trail, hot-pixel and CTE-trail pixels labelled CR.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.truth.product import read_truth_product
from crlib.truth.quality import star_core_mask

#: Classes reported, in order; ``star_core`` comes from the model, the others from ARTEFACT bits.
ARTEFACT_CLASSES = ("cte_trail", "hot_pixel", "unflagged_hot", "sink", "satellite", "bad_column", "star_core")
#: Largest share of a class's pixels the truth may label CR (issue 13).
ARTEFACT_TARGET = 0.01


def artefact_counts(crtruth: Path, simtruth: Path, *, profile: InstrumentProfile) -> dict[str, float]:
    """Per-class pixel counts of one exposure (summable over exposures).

    Parameters
    ----------
    crtruth
        Our ``<rootname>_crtruth.fits``.
    simtruth
        The simulator's ``<rootname>_simtruth.fits`` (with ``ARTEFACT`` extensions when effects
        were on; without them only star cores are counted).
    profile
        Saturation level for star-core detection.

    Returns
    -------
    dict
        ``<class>_pixels`` (non-CR pixels of the class), ``<class>_labelled_cr`` (of those,
        flagged and valid in the truth), ``<class>_valid`` (valid in the truth).
    """
    from astropy.io import fits

    from crlib.simulate.artefacts import ARTEFACT_BITS

    _, masks = read_truth_product(crtruth)
    counts = {f"{c}_{k}": 0.0 for c in ARTEFACT_CLASSES for k in ("pixels", "labelled_cr", "valid")}
    with fits.open(simtruth, memmap=False) as sim:
        names = {(hdu.name, hdu.ver) for hdu in sim[1:]}
        for extver, (ours, valid) in masks.items():
            valid_b = valid.astype(bool)
            labelled = ours.astype(bool) & valid_b
            not_cr = ~np.asarray(sim["CRMASK", extver].data).astype(bool)
            model = np.asarray(sim["MODEL", extver].data, dtype=np.float32)
            regions: dict[str, np.ndarray] = {
                "star_core": star_core_mask(
                    model, valid=not_cr, nsigma=50.0, saturation_e=profile.saturation_e
                )
            }
            if ("ARTEFACT", extver) in names:
                bits = np.asarray(sim["ARTEFACT", extver].data)
                for name, bit in ARTEFACT_BITS.items():
                    regions[name] = (bits & bit) > 0
            for name, region in regions.items():
                region = region & not_cr
                counts[f"{name}_pixels"] += float(region.sum())
                counts[f"{name}_labelled_cr"] += float((region & labelled).sum())
                counts[f"{name}_valid"] += float((region & valid_b).sum())
    return counts


def summarise_artefacts(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Sum :func:`artefact_counts` over exposures; per class pixels, fraction labelled CR, valid share.

    Returns
    -------
    dict
        ``{class: {"pixels", "labelled_cr", "fraction_labelled_cr", "valid_fraction"}}`` for the
        classes with pixels.
    """
    summary: dict[str, dict[str, Any]] = {}
    for name in ARTEFACT_CLASSES:
        pixels = sum(row.get(f"{name}_pixels", 0.0) for row in rows)
        if pixels <= 0:
            continue
        labelled = sum(row.get(f"{name}_labelled_cr", 0.0) for row in rows)
        valid = sum(row.get(f"{name}_valid", 0.0) for row in rows)
        summary[name] = {
            "pixels": int(pixels),
            "labelled_cr": int(labelled),
            "fraction_labelled_cr": labelled / pixels,
            "valid_fraction": valid / pixels,
        }
    return summary


def format_artefacts(summary: dict[str, dict[str, Any]], *, indent: str = "  ") -> list[str]:
    """Lines ``class: pixels, labelled CR (fraction), still valid`` of :func:`summarise_artefacts`."""
    lines = []
    for name, row in summary.items():
        mark = "" if row["fraction_labelled_cr"] <= ARTEFACT_TARGET else "  (above the 1% target)"
        lines.append(
            f"{indent}{name:14s} {row['pixels']:>9d} px, labelled CR {row['labelled_cr']:>7d} "
            f"({row['fraction_labelled_cr']:.4f}), valid {row['valid_fraction']:.3f}{mark}"
        )
    return lines


def score_artefacts(
    visit_dir: Path, results: Sequence[Any], exposures: Sequence[Any]
) -> dict[str, dict[str, Any]]:
    """:func:`summarise_artefacts` of a visit's truth results against ``visit_dir/truth/*_simtruth.fits``.

    Parameters
    ----------
    visit_dir
        The simulated visit.
    results
        :class:`~crlib.records.TruthResult` of its exposures (those without a product are skipped).
    exposures
        :class:`~crlib.formats.exposures.ExposureInfo` of the exposures (profile by rootname).
    """
    profiles = {e.rootname: e.profile for e in exposures}
    rows = [
        artefact_counts(
            Path(r.path),
            Path(visit_dir) / "truth" / f"{r.rootname}_simtruth.fits",
            profile=profiles[r.rootname],
        )
        for r in results
        if r.path is not None
    ]
    return summarise_artefacts(rows)


def excluded_counts(results: Sequence[Any]) -> dict[str, int]:
    """Sum of the truth records' ``artefact_*`` parameters (what the truth stage excluded)."""
    total: dict[str, int] = {}
    for result in results:
        for key, value in result.parameters.items():
            if key.startswith("artefact_"):
                total[key] = total.get(key, 0) + int(value)
    return total
