"""What an Airflow inference task costs beyond its inference, cold and warm (``crlib bench warm-workers``).

The same simulated proposal is reprocessed by ``crlib_reprocess_proposal`` on a local
CeleryExecutor cluster twice, on one worker each time: first with ``CRLIB_WARM_WORKERS=false``
(every infer task imports the inference stack and loads its model), then with warm pool
processes (:mod:`crlib.pipeline.warm`). For every infer task the overhead is the task
instance's duration (Airflow's ``start_date`` to ``end_date``: fork, task runner, DAG parse,
settings, model resolution and load, ledger and database writes) minus the seconds the
prediction itself took (``predict_exposure``: read, infer, write; recorded in the run ledger).
Issue 16's target is <= 0.5 s per task, warm.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median
from typing import Literal

from crlib.bench.scaling import DAG_ID, PROPOSAL_ID, scratch_proposal
from crlib.config import Settings
from crlib.errors import CrlibError
from crlib.harness.cluster import LocalCluster, local_cluster
from crlib.harness.cluster_config import WorkerSpec
from crlib.pipeline.ledger import RunLedger

log = logging.getLogger(__name__)

#: Issue 16: per-task overhead of a warm inference worker, seconds.
WARM_OVERHEAD_TARGET_S = 0.5


@dataclass(frozen=True, slots=True)
class InferTaskCosts:
    """The infer tasks of one reprocess (seconds).

    Attributes
    ----------
    warm
        Whether the worker's pool processes were warm.
    task_seconds
        Each infer task instance's duration.
    predict_seconds
        Each exposure's prediction time from the run ledger.
    """

    warm: bool
    task_seconds: tuple[float, ...]
    predict_seconds: tuple[float, ...]

    @property
    def overhead_s(self) -> float:
        """Mean task duration minus mean prediction time: what a task costs beyond its inference."""
        return mean(self.task_seconds) - mean(self.predict_seconds)

    @property
    def median_task_s(self) -> float:
        """Median infer task duration."""
        return median(self.task_seconds)


@dataclass(frozen=True, slots=True)
class WarmWorkerReport:
    """Both reprocesses of :func:`run_warm_worker_benchmark`."""

    visits: int
    exposures: int
    size: str
    cold: InferTaskCosts
    warm: InferTaskCosts
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def saved_per_task_s(self) -> float:
        """Overhead the warm worker saves per infer task."""
        return self.cold.overhead_s - self.warm.overhead_s

    def passed(self) -> bool:
        """Whether the warm overhead meets :data:`WARM_OVERHEAD_TARGET_S`."""
        return self.warm.overhead_s <= WARM_OVERHEAD_TARGET_S


def _infer_costs(cluster: LocalCluster, run_id: str, data_root: Path, *, warm: bool) -> InferTaskCosts:
    tasks = [t for t in cluster.task_runs(DAG_ID, run_id) if t.task_id == "infer"]
    if not tasks or any(t.state != "success" or not t.started_at or not t.ended_at for t in tasks):
        states = ", ".join(f"{t.map_index}:{t.state}" for t in tasks) or "none"
        raise CrlibError(f"run {run_id}: infer tasks did not all succeed ({states}); logs in {cluster.home}")
    predicted = [
        float(state.seconds)
        for _, state in RunLedger(data_root, run_id).exposures()
        if state.seconds is not None and not state.reused_prediction
    ]
    if len(predicted) != len(tasks):
        raise CrlibError(f"run {run_id}: {len(tasks)} infer tasks but {len(predicted)} timed predictions")
    return InferTaskCosts(
        warm=warm,
        task_seconds=tuple(
            (t.ended_at - t.started_at).total_seconds() for t in tasks if t.ended_at and t.started_at
        ),
        predict_seconds=tuple(predicted),
    )


def run_warm_worker_benchmark(
    settings: Settings,
    *,
    visits: int = 2,
    exposures: int = 3,
    size: Literal["full", "small"] = "small",
    seed: int = 2026,
    progress: Callable[[str], None] | None = None,
) -> WarmWorkerReport:
    """Reprocess one simulated proposal on a cold, then on a warm one-worker cluster.

    Parameters
    ----------
    settings
        Data root (scratch under ``bench-warm/``) and results database server (the configured one
        or the embedded PostgreSQL); scratch databases are created there and dropped.
    visits, exposures, size, seed
        The simulated proposal (see :func:`crlib.simulate.simulate_archive`).
    progress
        Called with a short message before each phase.

    Returns
    -------
    WarmWorkerReport
    """
    notify = progress or (lambda message: None)
    costs: dict[bool, InferTaskCosts] = {}
    with scratch_proposal(
        settings,
        "bench-warm",
        roles=("airflow", "results"),
        visits=visits,
        exposures=exposures,
        size=size,
        seed=seed,
        notify=notify,
    ) as scratch:
        work = scratch.work
        load_before = os.getloadavg()
        cluster_settings = settings.model_copy(
            update={
                "threads": 1,
                "archive": f"local:{work / 'archive'}",
                "device": "cpu",
                "data_root": work / "cluster",
                "database_url": scratch.database_url("results"),
            }
        )
        with local_cluster(
            cluster_settings,
            workers=(),
            metadata_database=scratch.databases["airflow"],
            home=work / "airflow",
        ) as cluster:
            for warm in (False, True):
                label = "warm" if warm else "cold"
                data_root = work / f"data-{label}"
                spec = WorkerSpec(
                    f"w-{label}",
                    ("cpu", "gpu"),
                    env={"CRLIB_DATA_ROOT": str(data_root), "CRLIB_WARM_WORKERS": str(warm).lower()},
                )
                cluster.start_worker(spec)
                notify(f"reprocess on one {label} worker")
                run_id = cluster.trigger(
                    DAG_ID, conf={"proposal_id": PROPOSAL_ID}, run_id=f"warm_{label}_{scratch.stamp}"
                )
                cluster.wait_for_run(DAG_ID, run_id)
                costs[warm] = _infer_costs(cluster, run_id, data_root, warm=warm)
                cluster.stop_worker(spec.name)
    return WarmWorkerReport(
        visits=visits,
        exposures=exposures,
        size=size,
        cold=costs[False],
        warm=costs[True],
        load_before=load_before,
        load_after=os.getloadavg(),
    )
