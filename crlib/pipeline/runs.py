"""Recording DAG-run state changes (called by the Airflow listener plugin)."""

from __future__ import annotations

import datetime as dt

from crlib.config import Settings
from crlib.pipeline.database import results_session


def record_dag_run(
    settings: Settings,
    *,
    dag_id: str,
    run_id: str,
    state: str,
    run_type: str = "",
    started: dt.datetime | None = None,
    ended: dt.datetime | None = None,
    message: str | None = None,
) -> None:
    """Upsert the pipeline-run row of a DAG run: ``running`` starts it, ``success``/``failed`` end it.

    Airflow's ``success`` never hides what the run's summary task found: a run recorded
    ``partial`` (some exposures failed) or ``failed`` (a stage hit a bug, the request named
    nothing) keeps that status and its message.

    Parameters
    ----------
    settings
        Settings naming the results database.
    dag_id, run_id
        Airflow identifiers of the run.
    state
        ``running``, ``success`` or ``failed``.
    run_type
        Airflow run type (``scheduled``, ``manual`` ...), recorded as the trigger.
    started, ended
        Timestamps from Airflow (UTC).
    message
        Airflow's message for the state change.
    """
    from crlib.db.runs import finish_run, run_status, start_run

    with results_session(settings, upgrade=True) as session:
        if state == "running":
            trigger = run_type.split(".")[-1].lower() or "unknown"
            start_run(session, run_id=run_id, dag_id=dag_id, trigger=trigger, started_at=started)
        elif (recorded := run_status(session, run_id=run_id)) == "failed" or (
            state == "success" and recorded == "partial"
        ):
            # The summary task recorded the outcome and its message: keep both.
            finish_run(session, run_id=run_id, status=str(recorded), finished_at=ended)
        else:
            finish_run(session, run_id=run_id, status=state, message=message, finished_at=ended)
