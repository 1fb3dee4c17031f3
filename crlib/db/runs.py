"""Pipeline runs (Airflow DAG runs and CLI invocations): start, finish, status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crlib.db.atomic import stage_transaction
from crlib.db.orm import PipelineRun, table_of
from crlib.db.validation import check_row, json_safe, one_of
from crlib.db.vocabulary import RUN_STATUSES
from crlib.errors import DatabaseError


def start_run(
    session: Session,
    *,
    run_id: str,
    dag_id: str,
    trigger: str,
    proposal_id: int | None = None,
    params: Mapping[str, Any] | None = None,
    started_at: dt.datetime | None = None,
) -> None:
    """Record that a pipeline run started (re-recording the same ``run_id`` restarts it)."""
    row = {
        "run_id": run_id,
        "dag_id": dag_id,
        "trigger": trigger,
        "status": "running",
        "started_at": started_at or dt.datetime.now(dt.UTC),
        "finished_at": None,
        "proposal_id": proposal_id,
        "params": json_safe(dict(params or {})),
    }
    check_row(table_of(PipelineRun), row, record=f"run {run_id}")
    with stage_transaction(session, f"start of run {run_id}"):
        statement = insert(table_of(PipelineRun)).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=["run_id"], set_={k: statement.excluded[k] for k in row if k != "run_id"}
        )
        session.execute(statement)


def finish_run(
    session: Session,
    *,
    run_id: str,
    status: str,
    summary: Mapping[str, Any] | None = None,
    message: str | None = None,
    finished_at: dt.datetime | None = None,
) -> None:
    """Record the end of a pipeline run (``success`` or ``failed``) with a summary of counts.

    ``summary`` and ``message`` left as ``None`` keep what is recorded: the Airflow listener marks
    the DAG run's final state after the summary task recorded the counts, and must not erase them.
    """
    row: dict[str, Any] = {"status": status}
    if summary is not None:
        row["summary"] = json_safe(dict(summary))
    if message is not None:
        row["message"] = message
    check_row(table_of(PipelineRun), row, record=f"run {run_id}", checks={"status": one_of(RUN_STATUSES)})
    with stage_transaction(session, f"end of run {run_id}"):
        result = session.execute(
            table_of(PipelineRun)
            .update()
            .where(PipelineRun.run_id == run_id)
            .values(**row, finished_at=finished_at or dt.datetime.now(dt.UTC))
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise DatabaseError(f"run {run_id} was never started (call start_run first)")
