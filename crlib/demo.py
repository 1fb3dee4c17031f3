"""The main job on the embedded defaults: what ``make demo`` runs.

Simulates a small archive (three visits, one per field type), points the archive source at it,
runs the ``crlib_nightly_ingest`` DAG through Airflow (``airflow dags test``, a subprocess: crlib
never imports Airflow) against the embedded PostgreSQL, and summarises what was recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crlib.config import Settings
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
    simulate_archive(
        archive_dir, visits=3, exposures=3, field_type="mixed", filters=("F606W",), size="small", seed=seed
    )
    run_settings = settings.model_copy(update={"archive": f"local:{archive_dir}"})
    from crlib.db.session import open_results_db

    open_results_db(run_settings, upgrade=True)[0].dispose()
    run_id = f"demo__{stamp}"
    if airflow:
        from crlib.pipeline.airflow_runner import airflow_environment, prepare_airflow, run_dag_test

        environment = airflow_environment(run_settings)
        prepare_airflow(environment)
        run_dag_test(environment, "crlib_nightly_ingest")
        runs = sorted((run_settings.data_root / "runs").glob("*"), key=lambda p: p.stat().st_mtime)
        run_id = runs[-1].name if runs else run_id
    else:
        from crlib.pipeline.sequential import run_pipeline

        run_pipeline(run_settings, run_id=run_id)
    return format_summary(RunLedger(run_settings.data_root, run_id), archive_dir=archive_dir)


def format_summary(ledger: RunLedger, *, archive_dir: Path) -> str:
    """Terminal summary of one run from its ledger (visits, rejections, truth, TPR per field type)."""
    from collections import defaultdict

    visits = dict(ledger.visits())
    exposures = dict(ledger.exposures())
    lines = [f"Archive: {archive_dir}", f"Run: {ledger.run_id}", ""]
    lines.append(
        f"Visits {len(visits)}, exposures {sum(len(v.get('files', {})) for v in visits.values())}, "
        f"accepted {sum(len(v.get('accepted', [])) for v in visits.values())}"
    )
    for visit, state in visits.items():
        for rootname, reasons in state.get("rejected", {}).items():
            lines.append(f"  rejected {rootname}: {'; '.join(reasons)}")
        statuses = state.get("truth_status", {})
        if statuses:
            lines.append(f"  truth {visit}: " + ", ".join(f"{r}={s}" for r, s in sorted(statuses.items())))
    by_field: dict[str, list[dict[str, float]]] = defaultdict(list)
    for state in exposures.values():
        if state.get("scored"):
            by_field[str(state.get("field_type"))].append(state["tpr_at_fpr"])
    lines.append("")
    lines.append("TPR at FPR 0.05% / 0.5% (mean over exposures, no dilation):")
    for field, values in sorted(by_field.items()):
        low = sum(v["0.0005"] for v in values) / len(values)
        high = sum(v["0.005"] for v in values) / len(values)
        lines.append(f"  {field:18s} {100 * low:6.2f} / {100 * high:6.2f}   ({len(values)} exposures)")
    lines += [
        "",
        "Look further:",
        "  .venv/bin/crlib stats cr-rate --refresh",
        "  .venv/bin/crlib stats performance --refresh",
        "  .venv/bin/crlib stats pipeline",
        "  make airflow   # Airflow UI on http://127.0.0.1:8080 with these DAGs",
    ]
    return "\n".join(lines)
