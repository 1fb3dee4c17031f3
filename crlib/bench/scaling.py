"""How a multi-visit reprocess scales with Celery workers (``crlib bench cluster``).

The same simulated proposal is reprocessed three times: in one process (``crlib run``: the work
without Airflow), then by ``crlib_reprocess_proposal`` on a local CeleryExecutor cluster with one
worker, then with two (one task slot and one thread per task each). The two-worker wall time over
the one-worker wall time is the scaling ratio; the one-worker wall time minus the in-process time,
per task, is what Airflow adds to each task (scheduling, queueing, a fresh task process, imports).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from crlib.config import Settings
from crlib.errors import CrlibError
from crlib.harness.cluster import LocalCluster, local_cluster
from crlib.harness.cluster_config import WorkerSpec
from crlib.harness.services import create_database, drop_database

if TYPE_CHECKING:
    from pydantic import SecretStr

log = logging.getLogger(__name__)

#: Target: two workers take at most this fraction of one worker's wall time.
SCALING_TARGET = 0.65
DAG_ID = "crlib_reprocess_proposal"
PROPOSAL_ID = 10775


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """One reprocess on the cluster with ``workers`` workers."""

    workers: int
    wall_s: float
    tasks: int
    task_seconds: float
    mean_queue_wait_s: float
    hosts: tuple[str, ...]
    load_1min: float


@dataclass(frozen=True, slots=True)
class ScalingReport:
    """Measurements of :func:`run_scaling_benchmark` (seconds)."""

    visits: int
    exposures: int
    size: str
    in_process_s: float
    runs: tuple[WorkerRun, ...]
    cores: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)

    def run(self, workers: int) -> WorkerRun:
        """The run with ``workers`` workers."""
        return next(r for r in self.runs if r.workers == workers)

    @property
    def ratio(self) -> float:
        """Two-worker wall time over one-worker wall time."""
        return self.run(2).wall_s / self.run(1).wall_s

    @property
    def overhead_per_task_s(self) -> float:
        """What Airflow adds per task: (one-worker wall time - in-process time) / tasks."""
        one = self.run(1)
        return (one.wall_s - self.in_process_s) / max(one.tasks, 1)

    @property
    def in_task_overhead_s(self) -> float:
        """Per task, one-worker task-instance time beyond the in-process work (process, parse, imports)."""
        one = self.run(1)
        return (one.task_seconds - self.in_process_s) / max(one.tasks, 1)

    @property
    def between_tasks_s(self) -> float:
        """Per task, one-worker wall time outside any task instance (scheduling, Celery hand-off)."""
        one = self.run(1)
        return (one.wall_s - one.task_seconds) / max(one.tasks, 1)

    def passed(self) -> bool:
        """Whether the ratio meets :data:`SCALING_TARGET`."""
        return self.ratio <= SCALING_TARGET


def _summarise(workers: int, cluster: LocalCluster, run_id: str) -> WorkerRun:
    state, start, end = cluster.run_times(DAG_ID, run_id)
    tasks = cluster.task_runs(DAG_ID, run_id)
    if state != "success" or start is None or end is None:
        raise CrlibError(f"run {run_id} with {workers} worker(s) ended {state}; logs in {cluster.log_dir}")
    failed = [t for t in tasks if t.state != "success"]
    if failed:
        names = ", ".join(f"{t.task_id}[{t.map_index}]" for t in failed)
        raise CrlibError(f"run {run_id}: tasks did not succeed: {names}; logs in {cluster.home / 'logs'}")

    def seconds(a: dt.datetime | None, b: dt.datetime | None) -> float:
        return (b - a).total_seconds() if a and b else 0.0

    waits = [seconds(t.queued_at, t.started_at) for t in tasks]
    return WorkerRun(
        workers=workers,
        wall_s=seconds(start, end),
        tasks=len(tasks),
        task_seconds=sum(seconds(t.started_at, t.ended_at) for t in tasks),
        mean_queue_wait_s=sum(waits) / max(len(waits), 1),
        hosts=tuple(sorted({t.hostname for t in tasks})),
        load_1min=os.getloadavg()[0],
    )


@dataclass(frozen=True, slots=True)
class ScratchProposal:
    """A simulated proposal and the scratch databases one cluster benchmark runs it with.

    Attributes
    ----------
    stamp
        UTC time of creation, to the second; names the work directory and the databases.
    work
        ``<parent>/<stamp>``: the simulated archive in ``archive/``, each phase's files beside it.
    server_url
        PostgreSQL server the scratch databases live on.
    databases
        ``{role: database name}``, created on demand by :meth:`database_url`.
    """

    stamp: str
    work: Path
    server_url: str
    databases: dict[str, str]

    def database_url(self, role: str) -> SecretStr:
        """Create the scratch database of ``role`` and return its URL (for ``Settings.database_url``)."""
        from pydantic import SecretStr

        return SecretStr(create_database(self.server_url, self.databases[role]))


@contextlib.contextmanager
def scratch_proposal(
    settings: Settings,
    folder: str,
    *,
    roles: tuple[str, ...],
    visits: int,
    exposures: int,
    size: Literal["full", "small"],
    seed: int,
    notify: Callable[[str], None],
    keep: bool = False,
) -> Iterator[ScratchProposal]:
    """Simulate proposal :data:`PROPOSAL_ID` (mixed field types) under ``<data_root>/<folder>/<stamp>``.

    On exit the scratch databases (``crlib_<folder>_<stamp>_<role>`` on the configured or embedded
    PostgreSQL server) are dropped and the work directory removed, unless ``keep``.
    """
    from crlib.db.engine import resolve_database_url
    from crlib.simulate import simulate_archive

    stamp = f"{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    work = (settings.data_root / folder / stamp).resolve()
    work.mkdir(parents=True, exist_ok=True)
    notify(f"simulating {visits} visits x {exposures} {size} exposures in {work}")
    simulate_archive(
        work / "archive",
        visits=visits,
        exposures=exposures,
        field_type="mixed",
        size=size,
        seed=seed,
        proposal_id=PROPOSAL_ID,
    )
    prefix = folder.replace("-", "_")
    scratch = ScratchProposal(
        stamp=stamp,
        work=work,
        server_url=resolve_database_url(settings),
        databases={role: f"crlib_{prefix}_{stamp}_{role}" for role in roles},
    )
    try:
        yield scratch
    finally:
        if not keep:
            for name in scratch.databases.values():
                with contextlib.suppress(Exception):
                    drop_database(scratch.server_url, name)
            shutil.rmtree(work, ignore_errors=True)


def _in_process(settings: Settings, env: dict[str, str], work: Path) -> float:
    """Wall time of ``crlib run --proposal`` (every stage in one process, in turn)."""
    command = [sys.executable, "-m", "crlib", "run", "--proposal", str(PROPOSAL_ID)]
    log_path = work / "in-process.log"
    started = time.perf_counter()
    with log_path.open("wb") as stream:
        result = subprocess.run(command, env=env, stdout=stream, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise CrlibError(f"`crlib run` failed (exit {result.returncode}); see {log_path}")
    return elapsed


def run_scaling_benchmark(
    settings: Settings,
    *,
    visits: int = 4,
    exposures: int = 2,
    size: Literal["full", "small"] = "full",
    seed: int = 2026,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ScalingReport:
    """Reprocess one simulated proposal in one process, then on one and on two Celery workers.

    Parameters
    ----------
    settings
        Data root (scratch space under ``bench-cluster/``) and results database server (the
        configured one or the embedded PostgreSQL); scratch databases are created there and dropped.
    visits, exposures, size, seed
        The simulated proposal (see :func:`crlib.simulate.simulate_archive`).
    keep
        Keep the scratch databases and files (for reading the logs; about 7 GB per phase at
        full size, otherwise each phase's files are removed when it ends).
    progress
        Called with a short message before each phase.

    Returns
    -------
    ScalingReport
        Wall times, the ratio, Airflow's per-task overhead and the machine's load.
    """
    from crlib.harness.airflow_runner import airflow_environment

    notify = progress or (lambda message: None)
    with scratch_proposal(
        settings,
        "bench-cluster",
        roles=("airflow", "results", "inprocess"),
        visits=visits,
        exposures=exposures,
        size=size,
        seed=seed,
        notify=notify,
        keep=keep,
    ) as scratch:
        work = scratch.work
        threads = {"threads": 1, "archive": f"local:{work / 'archive'}", "device": "cpu"}
        load_before = os.getloadavg()
        inprocess = settings.model_copy(
            update={
                **threads,
                "data_root": work / "in-process",
                "database_url": scratch.database_url("inprocess"),
            }
        )
        env = {**airflow_environment(inprocess).env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        notify("in-process reprocess (crlib run)")
        in_process_s = _in_process(inprocess, env, work)
        if not keep:  # full-size drizzle products take gigabytes per phase
            shutil.rmtree(work / "in-process", ignore_errors=True)
        cluster_settings = settings.model_copy(
            update={**threads, "data_root": work / "cluster", "database_url": scratch.database_url("results")}
        )
        runs = []
        with local_cluster(
            cluster_settings,
            workers=(),
            metadata_database=scratch.databases["airflow"],
            home=work / "airflow",
        ) as cluster:
            for count in (1, 2):
                specs = [
                    WorkerSpec(
                        f"w{i + 1}", ("cpu", "gpu"), env={"CRLIB_DATA_ROOT": str(work / f"data-{count}w")}
                    )
                    for i in range(count)
                ]
                for spec in specs:
                    cluster.start_worker(spec)
                notify(f"reprocess on {count} worker(s)")
                run_id = cluster.trigger(
                    DAG_ID, conf={"proposal_id": PROPOSAL_ID}, run_id=f"bench_{count}w_{scratch.stamp}"
                )
                cluster.wait_for_run(DAG_ID, run_id)
                runs.append(_summarise(count, cluster, run_id))
                for spec in specs:
                    cluster.stop_worker(spec.name)
                if not keep:
                    shutil.rmtree(work / f"data-{count}w", ignore_errors=True)
    names = scratch.databases.values()
    notes = [f"scratch files in {work}, databases {', '.join(sorted(names))}"] if keep else []
    return ScalingReport(
        visits=visits,
        exposures=exposures,
        size=size,
        in_process_s=in_process_s,
        runs=tuple(runs),
        cores=os.cpu_count() or 1,
        load_before=load_before,
        load_after=os.getloadavg(),
        notes=notes,
    )
