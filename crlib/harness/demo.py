"""The main job on the embedded defaults: what ``make demo`` runs.

Simulates a small archive (three visits, one per field type), points the archive source at it,
runs the ``crlib_nightly_ingest`` DAG through Airflow (``airflow dags test``, a subprocess: crlib
never imports Airflow) against the embedded PostgreSQL, and summarises what was recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from crlib.config import Settings
from crlib.errors import CrlibError
from crlib.pipeline.ledger import RunLedger

log = logging.getLogger(__name__)


def run_demo(settings: Settings, *, out: Path | None = None, seed: int = 2026, airflow: bool = True) -> str:
    """Simulate an archive, run the nightly DAG over it, and return a human-readable summary.

    Parameters
    ----------
    settings
        Effective settings (data root, database).
    out
        Directory under which this demo's archive ``archive-<UTC stamp>/`` is written (default
        ``<data_root>/demo``, where older demo archives are removed).
    seed
        Random seed for the simulation.
    airflow
        Run the DAG through Airflow; ``False`` runs the same stages in-process (``crlib run``).

    Returns
    -------
    str
        Multi-line summary for the terminal.
    """
    import datetime as dt
    import shutil

    from crlib.simulate import simulate_archive

    stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
    parent = (out or settings.data_root / "demo").resolve()
    if out is None:  # keep the default location small: only the newest demo archive stays
        for previous in parent.glob("archive-*"):
            shutil.rmtree(previous, ignore_errors=True)
    # A new directory per demo is a new archive source, with its own watermark: re-running the demo
    # processes the freshly simulated visits instead of finding the previous run's watermark past them.
    archive_dir = parent / f"archive-{stamp}"
    archive = simulate_archive(
        archive_dir, visits=3, exposures=3, field_type="mixed", filters=("F606W",), size="small", seed=seed
    )
    plant_demo_problems(archive_dir, visit=archive.visits[0].visit, seed=seed)
    run_settings = settings.model_copy(update={"archive": f"local:{archive_dir}"})
    from crlib.db.session import open_results_db

    open_results_db(run_settings, upgrade=True)[0].dispose()
    run_id = f"demo__{stamp}"
    if airflow:
        from crlib.harness.airflow_runner import (
            airflow_environment,
            inference_slots,
            prepare_airflow,
            run_dag_test,
        )

        environment = airflow_environment(run_settings)
        prepare_airflow(environment, inference_slots=inference_slots(run_settings))
        run_dag_test(environment, "crlib_nightly_ingest")
        runs = sorted((run_settings.data_root / "runs").glob("*"), key=lambda p: p.stat().st_mtime)
        run_id = runs[-1].name if runs else run_id
        dag_id = "crlib_nightly_ingest"
    else:
        from crlib.pipeline.sequential import run_pipeline

        run_pipeline(run_settings, run_id=run_id)
        dag_id = "crlib_cli_run"
    return format_summary(RunLedger(run_settings.data_root, run_id), archive_dir=archive_dir, dag_id=dag_id)


#: What the demo plants beside its three clean visits, so that screening and quarantine show.
DEMO_DAMAGE = "all_nan"
DEMO_SHORT_EXPTIME_S = 30.0


def plant_demo_problems(archive_dir: Path, *, visit: str, seed: int) -> None:
    """Add the demo's two planted problems to its simulated archive.

    - a damaged copy of one of ``visit``'s exposures (SCI,1 all NaN, as a failed transfer or a
      broken mirror leaves it): screening quarantines it with its reason, the visit's other
      exposures are processed, and the run ends ``partial``;
    - a fourth visit of one 30 s exposure: accepted (inferred) but excluded from training
      (< 100 s, the paper's rule), and without drizzle truth (one exposure cannot give any).
    """
    from crlib.simulate import simulate_visit
    from crlib.simulate.archive import write_observations
    from crlib.simulate.damage import plant_damaged_exposure

    plant_damaged_exposure(archive_dir, visit, DEMO_DAMAGE)
    simulate_visit(
        archive_dir,
        field_type="extragalactic",
        exposures=1,
        exptime_s=DEMO_SHORT_EXPTIME_S,
        size="small",
        seed=seed + 1,
        visit_index=3,
    )
    write_observations(archive_dir)


def pooled_tpr_by_field(ledger: RunLedger) -> dict[str, dict[str, Any]]:
    """TPR at FPR 0.05% / 0.5% per field type, pooled over the run's scored exposures.

    The same definition as ``crlib stats performance`` (:func:`crlib.db.stats.pooled_roc` and
    :func:`crlib.db.stats.tpr_at_fpr`): the exposures' score histograms, as the score stage
    recorded them, are summed and the ROC is computed from the sums, so every valid pixel weighs
    the same (not a mean of per-exposure TPRs).

    Returns
    -------
    dict
        ``{field_type: {"n_exposures": n, "tpr": {0.0005: tpr, 0.005: tpr}, "tie": warning or None}}``,
        the warning when a TPR is read inside the top score bin's tie
        (:func:`crlib.metrics.roc.top_bin_tie_note`).
    """
    import numpy as np

    from crlib.db.stats import DEFAULT_FPRS, pooled_roc, tpr_at_fpr
    from crlib.metrics.roc import top_bin_tie_note
    from crlib.pipeline.reuse import StageOutputs

    outputs = StageOutputs(ledger.data_root)
    sums: dict[str, list[Any]] = {}
    for rootname, state in ledger.exposures():
        if not state.scored:
            continue
        record = outputs.read("score", rootname)
        if record is None:
            raise CrlibError(f"{rootname} was scored but its metrics record is missing")
        metrics = record["metrics"]
        cr = np.asarray(metrics["hist_cr"], dtype=np.int64)
        noncr = np.asarray(metrics["hist_noncr"], dtype=np.int64)
        entry = sums.setdefault(str(state.field_type), [0, np.zeros_like(cr), np.zeros_like(noncr)])
        entry[0] += 1
        entry[1] = entry[1] + cr
        entry[2] = entry[2] + noncr
    pooled: dict[str, dict[str, Any]] = {}
    for field, (count, cr, noncr) in sorted(sums.items()):
        fpr, tpr = pooled_roc(cr, noncr)
        pooled[field] = {
            "n_exposures": count,
            "tpr": {f: tpr_at_fpr(fpr, tpr, f) for f in DEFAULT_FPRS},
            "tie": top_bin_tie_note(fpr, DEFAULT_FPRS),
        }
    return pooled


def format_summary(ledger: RunLedger, *, archive_dir: Path, dag_id: str = "crlib_nightly_ingest") -> str:
    """Terminal summary of one run from its ledger (visits, rejections, truth, TPR per field type).

    Parameters
    ----------
    ledger
        The run's ledger.
    archive_dir
        The simulated archive the run read.
    dag_id
        Under which name the run was recorded (``crlib stats pipeline`` lists it so).
    """
    visits = dict(ledger.visits())
    summary = ledger.summary()
    status = summary.get("status", "unknown")
    lines = [f"Archive: {archive_dir}", f"Run: {ledger.run_id} ({dag_id}): {status}"]
    if summary.get("message"):
        lines.append(f"  {summary['message']}")
    lines.append("")
    lines.append(
        f"Visits {len(visits)}, exposures {sum(len(v.files) for v in visits.values())}, "
        f"accepted {sum(len(v.accepted or []) for v in visits.values())}"
    )
    for visit, state in visits.items():
        quarantined = state.quarantined
        for rootname, why in sorted(quarantined.items()):
            lines.append(f"  quarantined {rootname} (damaged file, planted): {why}")
        for rootname, reasons in sorted(state.rejected.items()):
            if rootname not in quarantined:
                lines.append(f"  rejected {rootname}: {'; '.join(reasons)}")
        usable = set(state.training_usable)
        for rootname, notes in sorted(state.notes.items()):
            if rootname not in usable:  # the notes that change what the exposure is used for
                excluded = [note for note in notes if "training" in note] or notes
                lines.append(f"  accepted {rootname}, not for training: {'; '.join(excluded)}")
        for note in state.no_truth_notes:
            lines.append(f"  no truth for {visit}: {note}")
        statuses = state.truth_status
        if statuses:
            lines.append(f"  truth {visit}: " + ", ".join(f"{r}={s}" for r, s in sorted(statuses.items())))
    for fallback in summary.get("model_fallbacks", []):
        lines.append(f"  model: {fallback}")
    for key, error in sorted(summary.get("errors", {}).items()):
        lines.append(f"  error {key}: {error}")
    lines.append("")
    lines.append(
        "TPR at FPR 0.05% / 0.5%, no dilation, pooled over this run's scored exposures "
        "(summed score histograms, as `crlib stats performance` computes it):"
    )
    pooled = pooled_tpr_by_field(ledger)
    for field, result in pooled.items():
        low, high = (100 * result["tpr"][f] for f in sorted(result["tpr"]))
        lines.append(f"  {field:18s} {low:6.2f} / {high:6.2f}   ({result['n_exposures']} exposures)")
    lines += [f"  {field}: {result['tie']}" for field, result in pooled.items() if result["tie"]]
    lines += [
        "",
        "The run refreshed the statistics summaries. Look further:",
        "  .venv/bin/crlib stats performance --by field_type",
        "  .venv/bin/crlib stats cr-rate --by field_type",
        "  .venv/bin/crlib stats pipeline",
        "  make airflow   # Airflow UI on http://127.0.0.1:8080 with these DAGs",
    ]
    return "\n".join(lines)
