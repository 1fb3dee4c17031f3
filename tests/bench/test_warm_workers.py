"""``crlib bench warm-workers``' arithmetic on recorded task instances and a real run ledger.

The benchmark itself starts a CeleryExecutor cluster (minutes); the cluster is exercised by
``tests/deploy/test_distributed.py``. Here the cluster's answers are given, the ledger is real.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from crlib.bench.warm_workers import InferTaskCosts, WarmWorkerReport, _infer_costs
from crlib.errors import CrlibError
from crlib.harness.cluster import TaskRun
from crlib.pipeline.ledger import RunLedger

START = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


def _run(task_id: str, index: int, seconds: float, state: str = "success") -> TaskRun:
    return TaskRun(
        task_id=task_id,
        map_index=index,
        try_number=1,
        state=state,
        hostname="crlib-w",
        queue="gpu",
        queued_at=START,
        started_at=START,
        ended_at=START + dt.timedelta(seconds=seconds),
    )


@dataclass
class RecordedCluster:
    """What ``LocalCluster.task_runs`` answered for one run."""

    runs: list[TaskRun]
    home: Path = Path("/nowhere")

    def task_runs(self, dag_id: str, run_id: str) -> list[TaskRun]:
        return self.runs


def _ledger(data_root: Path, run_id: str, seconds: list[float]) -> None:
    ledger = RunLedger(data_root, run_id)
    for index, value in enumerate(seconds):
        ledger.update_exposure(f"j8bb010{index}q", seconds=value, reused_prediction=False)


def test_overhead_is_task_time_beyond_the_prediction(tmp_path):
    _ledger(tmp_path, "r1", [1.5, 1.7])
    cluster = RecordedCluster([_run("infer", 0, 2.0), _run("infer", 1, 2.0), _run("score", 0, 9.0)])
    costs = _infer_costs(cluster, "r1", tmp_path, warm=True)  # type: ignore[arg-type]
    assert costs.task_seconds == (2.0, 2.0) and sorted(costs.predict_seconds) == [1.5, 1.7]
    assert costs.overhead_s == pytest.approx(0.4)
    cold = InferTaskCosts(warm=False, task_seconds=(3.6, 3.2), predict_seconds=(1.6, 1.4))
    report = WarmWorkerReport(1, 2, "small", cold, costs, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    assert report.saved_per_task_s == pytest.approx(1.5) and report.passed()
    assert not WarmWorkerReport(1, 2, "small", costs, cold, (0, 0, 0), (0, 0, 0)).passed()


def test_a_failed_or_untimed_infer_task_is_an_error_not_a_number(tmp_path):
    _ledger(tmp_path, "r2", [1.0])
    failed = RecordedCluster([_run("infer", 0, 2.0, state="failed")])
    with pytest.raises(CrlibError, match="did not all succeed"):
        _infer_costs(failed, "r2", tmp_path, warm=False)  # type: ignore[arg-type]
    two_tasks = RecordedCluster([_run("infer", 0, 2.0), _run("infer", 1, 2.0)])
    with pytest.raises(CrlibError, match="2 infer tasks but 1 timed predictions"):
        _infer_costs(two_tasks, "r2", tmp_path, warm=False)  # type: ignore[arg-type]
