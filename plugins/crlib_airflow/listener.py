"""Listener that records crlib DAG-run state changes in the results database."""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def _record(dag_run: Any, state: str, message: str | None) -> None:
    if not str(getattr(dag_run, "dag_id", "")).startswith("crlib_"):
        return
    try:
        from crlib.config import load_settings
        from crlib.pipeline.runs import record_dag_run

        record_dag_run(
            load_settings(),
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            state=state,
            run_type=str(getattr(dag_run, "run_type", "")),
            started=getattr(dag_run, "start_date", None),
            ended=getattr(dag_run, "end_date", None),
            message=message,
        )
    except Exception:  # a listener must never break the scheduler
        log.exception("could not record DAG run %s/%s", getattr(dag_run, "dag_id", "?"), dag_run.run_id)


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    _record(dag_run, "running", msg)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _record(dag_run, "success", msg)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _record(dag_run, "failed", msg)
