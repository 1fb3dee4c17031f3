"""Ending a run: its summary and status, the watermark, the statistics summaries."""

from __future__ import annotations

import logging
from typing import Any

from crlib.config import Settings
from crlib.pipeline.database import results_database, results_session
from crlib.pipeline.ledger import RunLedger

log = logging.getLogger(__name__)


def abort_run(settings: Settings, *, run_id: str, message: str) -> None:
    """Record a run as ``failed`` with ``message`` when it cannot go on (e.g. no model to load)."""
    from crlib.db.runs import finish_run as record_finish

    with results_session(settings) as session:
        record_finish(session, run_id=run_id, status="failed", message=message)


def finish_run(settings: Settings, *, run_id: str, dag_id: str, advance_watermark: bool) -> dict[str, Any]:
    """Summarise the run, record its end and status, advance the watermark, refresh the statistics.

    Parameters
    ----------
    settings
        Effective settings (database).
    run_id
        Pipeline run id.
    dag_id
        The caller's DAG id (checked against the recorded one; logged).
    advance_watermark
        Nightly runs: move the archive watermark to the poll's upper bound, but only when every
        polled visit reached the screening stage (its verdicts are recorded); otherwise it stays,
        and the next poll finds the unrecorded visits again.

    Returns
    -------
    dict
        ``status`` (:func:`crlib.pipeline.outcome.run_outcome`: ``success``, ``partial``, ``failed``) and
        ``message``; counts of the run: visits, exposures, accepted, ``rejected`` (science rules,
        with reasons), ``failed`` (``{rootname: "stage: reason"}``: downloads, damaged files,
        predictions, scoring), ``errors`` (bugs), truth statuses, ``truth_new`` (truth made by
        this run with status ok/suspect, not reused), predictions, scored exposures,
        ``model_fallbacks`` (why shipped weights were used instead of a registered model), what
        was reused, the new watermark and the summaries' refresh times. The statistics
        summaries (``crlib stats``) are refreshed last, so they include this run.
    """
    from crlib.db.runs import finish_run as record_finish
    from crlib.db.stats import refresh_summaries
    from crlib.db.watermarks import DatabaseWatermarkStore
    from crlib.pipeline.outcome import run_summary

    ledger = RunLedger(settings.data_root, run_id)
    summary = run_summary(ledger, dag_id=dag_id)
    status, message = summary["status"], summary["message"]
    poll_state = ledger.poll()
    watermark = None
    with results_database(settings) as sessions:
        with sessions() as session:
            record_finish(session, run_id=run_id, status=status, summary=summary, message=message)
        unrecorded = summary["visits_unrecorded"]
        if advance_watermark and poll_state and not unrecorded and poll_state.get("until_mjd") is not None:
            watermark = DatabaseWatermarkStore(sessions).advance(
                poll_state["source"], float(poll_state["until_mjd"])
            )
        with sessions() as session:
            refreshed = refresh_summaries(session, concurrently=True)
            session.commit()
    summary["watermark_mjd"] = watermark
    summary["summaries_refreshed_s"] = {view: round(seconds, 3) for view, seconds in refreshed.items()}
    ledger.write_summary(summary)
    log.log(
        logging.INFO if status == "success" else logging.WARNING,
        "run %s finished %s%s",
        run_id,
        status,
        f": {message}" if message else "",
    )
    return summary
