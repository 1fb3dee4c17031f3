"""The truth stage's forked drizzle under Airflow 3's task supervisor, as a worker runs it.

``dag.test()`` runs tasks in the test process, so it never exercises what a real worker does: the
supervisor forks a task process whose logs travel as JSON lines over a socket, and whose stdout and
stderr are sockets too. The in-memory engine forks again (single drizzle, sky match, blot), so its
children inherit those sockets. ``supervised_truth_task.py`` starts such a task process with the
supervisor's own machinery, in a fresh interpreter configured as a worker (logging at DEBUG, so the
children name their processes), and the task builds a real visit's truth with forked steps. The
tests check what an operator depends on: the task ends, the supervisor is not kept waiting on
channels the children held, every log line arrives whole (the children's included), the truth is
that of a normal run, and a task stopped mid-drizzle leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crlib.truth.drizzle_forked import fork_available

pytestmark = pytest.mark.skipif(not fork_available(), reason="this platform cannot fork")

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def small_visit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("supervised-archive")
    archive = simulate_archive(root, visits=1, exposures=3, field_type="extragalactic", size="small", seed=11)
    return Path(archive.visits[0].directory)


def _supervised(visit: Path, tmp_path: Path, airflow_env: dict[str, str], *extra: str) -> dict[str, Any]:
    """The report of ``supervised_truth_task.py`` on ``visit``, run as a worker would run it."""
    report_path = tmp_path / "report.json"
    env = {
        **os.environ,
        **airflow_env,
        # DEBUG: the forked children say which process ran which item (crlib.truth.drizzle_forked)
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
    }
    command = [sys.executable, str(HERE / "supervised_truth_task.py"), str(visit), str(tmp_path / "w")]
    run = subprocess.run(
        [*command, str(report_path), *extra], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report: dict[str, Any] = json.loads(report_path.read_text())
    return report


def test_forked_drizzle_under_the_task_supervisor(
    small_visit: Path, tmp_path: Path, airflow_env: dict[str, str]
) -> None:
    seen = _supervised(small_visit, tmp_path, airflow_env)
    records = seen["records"]

    stderr = [r["event"] for r in records if r.get("logger") == "task.stderr"]
    assert seen["exit_code"] == 0, stderr[-20:]
    assert seen["open_channels_after_exit"] == [], "a forked child kept a supervisor channel open"
    malformed = [e for e in seen["supervisor_events"] if "Malformed" in str(e.get("event"))]
    assert not malformed, malformed[:3]

    # what the task printed arrives on its stdout channel: the statuses of a normal run
    printed = [r["event"] for r in records if r.get("logger") == "task.stdout"]
    truth_lines = [line for line in printed if line.startswith("TRUTH ")]
    assert len(truth_lines) == 1, printed[-10:]  # once: no child re-flushed the task's buffered output
    assert sorted(json.loads(truth_lines[0][len("TRUTH ") :]).values()) == ["ok", "ok", "ok"]

    # each forked step ran its items in children of the task process, and their records arrived
    forked = {step: {int(i): pid for i, pid in items.items()} for step, items in seen["forked"].items()}
    assert set(forked) == {"single drizzle", "sky match", "blot"}, forked
    for step, pids in forked.items():
        assert sorted(pids) == [0, 1, 2], (step, pids)  # 3 exposures; 3 pairs of them for the sky
        assert seen["task_pid"] not in pids.values() and len(set(pids.values())) >= 2, (step, pids)

    # drizzlepac's own lines from inside those children come through whole, as structured records
    drizzled = [r for r in records if str(r.get("logger", "")).startswith("drizzlepac.adrizzle")]
    assert drizzled and all(isinstance(r.get("event"), str) and r.get("timestamp") for r in drizzled)


def test_a_task_stopped_mid_drizzle_leaves_no_process_behind(
    small_visit: Path, tmp_path: Path, airflow_env: dict[str, str]
) -> None:
    """An operator marks the task failed (or it times out) while forked children are at work."""
    seen = _supervised(small_visit, tmp_path, airflow_env, "--terminate-when-forked")

    assert seen["terminated"] and seen["forked"], "the task ended before any fork"
    # SIGTERM does not stop a @task (Airflow's handler runs on_kill and carries on); SIGKILL does
    assert seen["exit_code"] == -signal.SIGKILL, seen["exit_code"]
    assert seen["open_channels_after_exit"] == []
    # the children ignore SIGTERM, as Airflow's handler makes them; the escalation to SIGKILL reaches
    # the task's whole process group, so none of them outlives the task
    assert seen["group_alive_after_terminate"] == []
    assert seen["forked_alive_after_terminate"] == []  # nor did one of them leave the group
