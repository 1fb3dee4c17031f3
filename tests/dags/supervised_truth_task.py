"""Run one visit's truth in a task process started and serviced by Airflow 3's supervisor.

``python tests/dags/supervised_truth_task.py VISIT_DIR WORK_DIR REPORT.json [--terminate-when-forked]``
in a fresh interpreter (the Airflow environment of a worker: logging configured by
``AIRFLOW__LOGGING__LOGGING_LEVEL``). The supervisor's ``WatchedSubprocess`` machinery forks the task
process exactly as a worker does (stdout, stderr, requests and the JSON log channel as sockets); the
task builds the visit's truth with the in-memory engine's forked steps. The report holds what the
supervisor saw: the exit code, how long it was kept waiting on open channels after the exit, every
record it received, its own complaints (malformed log lines), and which process ran each forked item
(with, for a stopped task, those still alive). Used by ``test_supervised_truth.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import structlog
from pydantic import TypeAdapter

#: Seconds the whole supervised task may take (a small 3-exposure visit takes ~10 s on 2 cores).
TASK_DEADLINE_S = 300
#: After the task process exits, how long the supervisor may wait for EOF on its channels before the
#: report says so (Airflow itself gives up after 60 s, having held the worker slot that long).
SOCKETS_GRACE_S = 5


def _truth_task(visit: Path, work: Path) -> None:
    """The task process: the visit's truth with every forked step, statuses printed on stdout.

    SIGTERM is handled as Airflow's task runner handles it (``_on_term`` in
    ``airflow.sdk.execution_time.task_runner._run_task_and_map_outcome``): the task process calls the
    operator's ``on_kill`` (nothing, for a ``@task``) and carries on, and its forked children, which
    inherit the handler, ignore the signal; only the supervisor's escalation to SIGKILL stops them.
    """
    task_pid = os.getpid()

    def on_term(_signum: int, _frame: Any) -> None:
        if os.getpid() != task_pid:
            return  # a forked child
        # the task process: a @task's on_kill() does nothing, and the task carries on

    signal.signal(signal.SIGTERM, on_term)
    from crlib.align import AlignOptions
    from crlib.truth import TruthOptions, build_visit_truth

    options = TruthOptions(
        engine="inmemory", drizzle_processes=3, align_options=AlignOptions(query_catalogs=False)
    )
    result = build_visit_truth(visit, work_dir=work, options=options)
    print("TRUTH " + json.dumps({e.rootname: e.status for e in result.exposures}))


def _process_stat(stat_file: Path) -> list[str] | None:
    """The fields of a ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...), or None."""
    try:
        return stat_file.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    fields = _process_stat(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from ``/proc``."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        fields = _process_stat(stat_file)
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


def _forked_items(records: list[dict[str, Any]]) -> dict[str, dict[int, int]]:
    """Per forked step, the process id that each item ran in, as the children logged it."""
    forked: dict[str, dict[int, int]] = {}
    for record in records:
        if record.get("logger") == "crlib.truth.drizzle_forked" and "forked process" in record["event"]:
            step, rest = record["event"].split(": item ")
            index, pid = rest.split(" in forked process ")
            forked.setdefault(step, {})[int(index)] = int(pid)
    return forked


def supervise(visit: Path, work: Path, *, terminate_when_forked: bool = False) -> dict[str, Any]:
    """Start the task process under the supervisor, service it to the end, return the report.

    ``terminate_when_forked``: once a forked child has reported in, stop the task the way the
    supervisor stops one (SIGTERM to the task's process group, escalated to SIGKILL; after 0.2 s here
    rather than Airflow's 5, so the small visit is still drizzling), and report the group's processes
    still alive (waiting up to 10 s for them to go).
    """
    from airflow.sdk.execution_time.supervisor import WatchedSubprocess

    @attrs.define(kw_only=True)
    class TaskProcess(WatchedSubprocess):
        decoder: ClassVar[TypeAdapter[Any]] = TypeAdapter(dict)

        def _handle_request(self, msg: Any, log: Any, req_id: int) -> None:
            raise AssertionError(f"unexpected request from the task process: {msg!r}")

    records: list[dict[str, Any]] = []

    def keep(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        records.append(dict(event))
        raise structlog.DropEvent

    task_log = structlog.wrap_logger(structlog.PrintLogger(), processors=[keep])
    started = time.monotonic()
    exited_at: float | None = None
    with structlog.testing.capture_logs() as supervisor_events:
        process = TaskProcess.start(
            id=uuid.uuid4(), target=lambda: _truth_task(visit, work), logger=task_log, new_process_group=True
        )
        terminated_at: float | None = None
        while process._exit_code is None or process._open_sockets:
            process._service_subprocess(max_wait_time=0.5)
            now = time.monotonic()
            if (
                terminate_when_forked
                and terminated_at is None
                and any("in forked process" in str(r.get("event")) for r in records)
            ):
                terminated_at = now
                process.kill(signal.SIGTERM, escalation_delay=0.2, force=True)
            if process._exit_code is not None and exited_at is None:
                exited_at = now
            overdue = now - started > TASK_DEADLINE_S
            if overdue or (exited_at is not None and now - exited_at > SOCKETS_GRACE_S):
                break
    if process._exit_code is None:
        process.kill(signal.SIGKILL)
    forked = _forked_items(records)
    left: list[int] | None = None
    children_left: list[int] | None = None
    if terminated_at is not None:
        left = _group_members(process.pid)
        while left and time.monotonic() < terminated_at + 10.0:
            time.sleep(0.2)
            left = _group_members(process.pid)
        children_left = sorted({pid for pids in forked.values() for pid in pids.values() if _alive(pid)})
    return {
        "terminated": terminated_at is not None,
        "group_alive_after_terminate": left,
        "forked_alive_after_terminate": children_left,
        "forked": forked,
        "task_pid": process.pid,
        "exit_code": process._exit_code,
        "seconds": time.monotonic() - started,
        "open_channels_after_exit": sorted(process._open_sockets.values()) if exited_at else None,
        "records": records,
        "supervisor_events": list(supervisor_events),
    }


if __name__ == "__main__":
    visit_dir, work_dir, report = (Path(arg) for arg in sys.argv[1:4])
    terminate = sys.argv[4:5] == ["--terminate-when-forked"]
    Path(report).write_text(
        json.dumps(supervise(visit_dir, work_dir, terminate_when_forked=terminate), default=str)
    )
