"""Pipeline runs (Airflow DAG runs and CLI invocations): start, finish, status."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crlib.db.atomic import stage_transaction
from crlib.db.orm import PipelineRun, table_of
from crlib.db.validation import check_row, json_safe, one_of
from crlib.db.vocabulary import RUN_STATUSES, RUN_UNFINISHED
from crlib.errors import DatabaseError

log = logging.getLogger(__name__)

#: Statuses a run can end with.
FINAL_STATUSES: tuple[str, ...] = ("success", "partial", "failed", "abandoned")


def process_owner() -> str:
    """``host:pid`` of this process: the owner of a run that lives in one process (``crlib run``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_is_gone(owner: str, *, started_at: dt.datetime) -> bool:
    """Whether a run owned by ``host:pid`` on this host has lost its process.

    A pid that now belongs to a process started after the run did (pid reuse) counts as gone.
    Owners on other hosts are never judged here (their heartbeat decides).
    """
    import psutil

    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        created = dt.datetime.fromtimestamp(psutil.Process(int(pid_text)).create_time(), dt.UTC)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False
    return created > started_at + dt.timedelta(seconds=5)


def reap_abandoned(
    session: Session, *, lease: dt.timedelta, now: dt.datetime | None = None, exclude: str | None = None
) -> list[str]:
    """Mark runs that are still ``queued``/``running`` but can no longer finish as ``abandoned``.

    A run is abandoned when its owner process (``crlib run`` on this host) is gone, or when its
    last heartbeat (its start when it never beat) is older than ``lease``. Its message says which.

    Parameters
    ----------
    session
        Results-database session (committed here).
    lease
        How long a run may go without a heartbeat (``CRLIB_RUN_LEASE_MINUTES``).
    now
        The current time (UTC); default: now.
    exclude
        A run id never to reap (the run that is starting).

    Returns
    -------
    list of str
        The run ids marked abandoned.
    """
    now = now or dt.datetime.now(dt.UTC)
    rows = _read(
        session,
        select(PipelineRun.run_id, PipelineRun.owner, PipelineRun.started_at, PipelineRun.heartbeat_at).where(
            PipelineRun.status.in_(RUN_UNFINISHED)
        ),
    )
    reaped: list[str] = []
    for run_id, owner, started_at, heartbeat_at in rows:
        if run_id == exclude:
            continue
        last = heartbeat_at or started_at
        if owner and _owner_is_gone(owner, started_at=started_at):
            why = (
                f"abandoned: its process {owner} is gone (killed or crashed); "
                f"last heartbeat {last:%Y-%m-%d %H:%M:%S}Z"
            )
        elif now - last > lease:
            minutes = (now - last).total_seconds() / 60
            why = (
                f"abandoned: no heartbeat for {minutes:.0f} min (lease {lease.total_seconds() / 60:.0f} min, "
                "CRLIB_RUN_LEASE_MINUTES)"
            )
        else:
            continue
        with stage_transaction(session, f"abandoning run {run_id}"):
            session.execute(
                table_of(PipelineRun)
                .update()
                .where(PipelineRun.run_id == run_id, PipelineRun.status.in_(RUN_UNFINISHED))
                .values(status="abandoned", message=why, finished_at=max(now, started_at))
            )
        log.warning("run %s %s", run_id, why)
        reaped.append(run_id)
    return reaped


def touch_run(session: Session, *, run_id: str, now: dt.datetime | None = None) -> None:
    """Record a heartbeat of a running run (a no-op for a run that is not running)."""
    with stage_transaction(session, f"heartbeat of run {run_id}"):
        session.execute(
            table_of(PipelineRun)
            .update()
            .where(PipelineRun.run_id == run_id, PipelineRun.status.in_(RUN_UNFINISHED))
            .values(heartbeat_at=now or dt.datetime.now(dt.UTC))
        )


def run_status(session: Session, *, run_id: str) -> str | None:
    """The recorded status of a run (``None`` if never started)."""
    rows = _read(session, select(PipelineRun.status).where(PipelineRun.run_id == run_id))
    return str(rows[0][0]) if rows else None


def _read(session: Session, statement: Any) -> list[Any]:
    """Rows of a read that leaves no transaction open (so later stage transactions commit)."""
    if session.in_transaction():
        return list(session.execute(statement).all())
    with session.begin():
        return list(session.execute(statement).all())


def start_run(
    session: Session,
    *,
    run_id: str,
    dag_id: str,
    trigger: str,
    proposal_id: int | None = None,
    params: Mapping[str, Any] | None = None,
    started_at: dt.datetime | None = None,
    owner: str | None = None,
) -> None:
    """Record that a pipeline run started (re-recording the same ``run_id`` restarts it).

    ``owner`` is ``host:pid`` (:func:`process_owner`) for a run whose whole life is this process,
    so that a later run can tell at once that it died; ``None`` (Airflow runs) relies on the
    heartbeat lease alone.
    """
    now = dt.datetime.now(dt.UTC)
    row = {
        "run_id": run_id,
        "dag_id": dag_id,
        "trigger": trigger,
        "status": "running",
        "started_at": started_at or now,
        "finished_at": None,
        "heartbeat_at": now,
        "owner": owner,
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
