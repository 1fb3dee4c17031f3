"""Records of every stage for small synthetic visits, and helpers to record and count them."""

from __future__ import annotations

from typing import Any

import numpy as np

from crlib.records import (
    AlignmentResult,
    ChipTruth,
    CrStatistics,
    ExposureMetrics,
    Observation,
    PredictionResult,
    ScreeningReason,
    ScreeningVerdict,
    TruthResult,
)


def visit_records(
    visit: str = "jbt122",
    *,
    proposal_id: int = 10775,
    n: int = 3,
    filter_name: str = "F606W",
    field_type: str = "globular_cluster",
    mjd: float = 55000.25,
    exptime_s: float = 500.0,
    bins: int = 16,
    seed: int = 1,
    dilated: bool = True,
) -> dict[str, Any]:
    """Every stage's records for one visit of ``n`` exposures (deterministic).

    Metrics carry dilated histograms unless ``dilated`` is false.
    """
    rng = np.random.default_rng(seed)
    observations = [
        Observation(
            rootname=f"{visit}{np.base_repr(i, 36).lower():0>2}q",
            proposal_id=proposal_id,
            visit=visit,
            instrument="ACS/WFC",
            filter=filter_name,
            exptime_s=exptime_s,
            t_min_mjd=mjd + i * 0.01,
            t_max_mjd=mjd + i * 0.01 + exptime_s / 86400,
            release_mjd=mjd + 365,
            target_name="NGC-104",
            ra_deg=6.02,
            dec_deg=-72.08,
            product_filename=f"{visit}_{i}_flc.fits",
            product_uri=f"mast:HST/product/{visit}_{i}_flc.fits",
            field_type=field_type,
            field_type_method="simulator" if field_type else None,
        )
        for i in range(n)
    ]
    roots = [o.rootname for o in observations]
    verdicts = [
        ScreeningVerdict(
            file=f"/data/{r}_flc.fits",
            rootname=r,
            verdict="accept" if i else "reject",
            usable_for_training=bool(i),
            reasons=()
            if i
            else (
                ScreeningReason("min_exptime", "EXPTIME", 5.0, "exposure shorter than 100 s"),
                ScreeningReason("gyro_mode", "GYROMODE", "T", "two-gyro guiding", "warning"),
            ),
            header_summary={"EXPTIME": exptime_s, "FILTER1": filter_name},
        )
        for i, r in enumerate(roots)
    ]
    alignment = AlignmentResult(
        visit=visit,
        status="aligned_absolute",
        catalog="GAIADR3",
        fit_geometry="rscale",
        n_matches=120,
        rms_px=0.04,
        wcsname="FIT_SVM_GAIADR3",
        per_exposure={r: {"dx": 0.1, "dy": -0.2} for r in roots},
    )
    truths = [
        TruthResult(
            rootname=r,
            method="drizzle",
            status="ok",
            path=f"/work/{r}_crtruth.fits",
            chips=(ChipTruth(1, 1000 + i, 100 + i, 0.97), ChipTruth(2, 2000 + i, 200 + i, 0.95)),
            parameters={"driz_cr_snr": "3.5 3.0"},
        )
        for i, r in enumerate(roots)
    ]
    statistics = [
        CrStatistics(r, chip, 1000 * chip + i, 100 * chip + i, exptime_s, 1.0 + 0.1 * chip + 0.01 * i)
        for i, r in enumerate(roots)
        for chip in (1, 2)
    ]
    predictions = [
        PredictionResult(r, "deepcr-acs-wfc", "1", "0.1.0", 0.5, "cpu", 2.5, 900.0, f"/work/{r}_crpred.fits")
        for r in roots
    ]
    metrics = []
    for r in roots:
        hist_cr = rng.integers(0, 50, bins) * np.linspace(0.1, 1, bins)
        hist_noncr = rng.integers(0, 5000, bins) * np.linspace(1, 0.01, bins)
        hist_cr_dilated = hist_cr + rng.integers(0, 10, bins)
        hist_noncr_dilated = np.maximum(hist_noncr - rng.integers(0, 10, bins), 0)
        metrics.append(
            ExposureMetrics(
                rootname=r,
                model_name="deepcr-acs-wfc",
                model_version="1",
                tp=int(rng.integers(100, 200)),
                fp=int(rng.integers(1, 50)),
                fn=int(rng.integers(1, 50)),
                tn=int(rng.integers(10**6, 2 * 10**6)),
                tpr_at_fpr={"0.0005": 0.8, "0.005": 0.95},
                tpr_at_fpr_dilated={"0.0005": 0.9, "0.005": 0.98},
                hist_cr=tuple(int(v) for v in hist_cr),
                hist_noncr=tuple(int(v) for v in hist_noncr),
                field_type=field_type,
                hist_cr_dilated=tuple(int(v) for v in hist_cr_dilated) if dilated else (),
                hist_noncr_dilated=tuple(int(v) for v in hist_noncr_dilated) if dilated else (),
            )
        )
    return {
        "observations": observations,
        "filter": filter_name,
        "verdicts": verdicts,
        "alignment": alignment,
        "truths": truths,
        "statistics": statistics,
        "predictions": predictions,
        "metrics": metrics,
    }


def record_visit(session: Any, records: dict[str, Any]) -> None:
    """Record every stage of a visit, one transaction per stage result (as the pipeline does)."""
    from crlib.db import repo

    repo.record_observations(session, records["observations"])
    repo.record_screening(session, records["verdicts"])
    repo.record_alignment(session, records["alignment"], filter_name=records["filter"])
    for truth in records["truths"]:
        repo.record_truth(session, truth)
    repo.record_cr_statistics(session, records["statistics"])
    repo.record_predictions(session, records["predictions"])
    repo.record_metrics(session, records["metrics"])


TABLES = (
    "proposals",
    "visits",
    "exposures",
    "screening_verdicts",
    "screening_reasons",
    "alignment_results",
    "truth_results",
    "truth_chips",
    "cr_statistics",
    "models",
    "model_versions",
    "predictions",
    "exposure_metrics",
)


def table_counts(session: Any) -> dict[str, int]:
    from sqlalchemy import text

    return {t: session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
