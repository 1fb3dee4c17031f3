"""Orchestration overhead: the ingestion stages called directly vs the same stages as an Airflow DAG.

``crlib bench dag`` simulates one visit (``size="full"``: 4 exposures of 2 x 4096x2048 chips),
then processes it twice from the same cold start, each time in a fresh data root and a fresh
scratch results database on the configured PostgreSQL server:

1. **direct**: every stage function of :mod:`crlib.pipeline.stages` called in order in a newly
   spawned Python process (so imports and model loading count, as they do in Airflow), each
   call timed;
2. **DAG**: ``airflow dags test crlib_nightly_ingest`` (or ``crlib_reprocess_proposal``) in a
   subprocess against a private, freshly migrated Airflow metadata database; per-task durations
   are read back from its ``task_instance`` table.

Per stage (DAG task id) the report gives the direct seconds, the seconds the DAG's task
instances took (summed over mapped instances), the difference (orchestration overhead) and
their ratio, plus whole-run wall times: the direct process, the DAG run (first task start to
last task end, which adds the scheduling gaps between tasks) and the ``airflow dags test``
command (adds Airflow's start-up and DAG parsing). Both runs must record the same outcome.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crlib.bench.fair_timing import process_and_children_cpu_seconds
from crlib.config import Settings
from crlib.errors import CrlibError

log = logging.getLogger(__name__)

#: Stages in the order they run, named like the DAGs' task ids.
STAGE_ORDER: tuple[str, ...] = ("poll", "fetch", "screen", "truth", "exposures", "infer", "score", "summary")
DAG_IDS: dict[str, str] = {"nightly": "crlib_nightly_ingest", "reprocess": "crlib_reprocess_proposal"}


@dataclass(frozen=True, slots=True)
class StageTiming:
    """Wall time of one stage, summed over its calls (direct) or task instances (DAG).

    Attributes
    ----------
    stage
        DAG task id (``poll``, ``fetch`` ... ``summary``).
    calls
        Stage-function calls in the direct run (visits or exposures for mapped stages).
    tasks
        Task instances in the DAG run.
    direct_s, dag_s
        Seconds.
    """

    stage: str
    calls: int
    tasks: int
    direct_s: float
    dag_s: float

    @property
    def overhead_s(self) -> float:
        """DAG seconds minus direct seconds."""
        return self.dag_s - self.direct_s

    @property
    def ratio(self) -> float:
        """DAG seconds over direct seconds (``inf`` when the direct call took no measurable time)."""
        return self.dag_s / self.direct_s if self.direct_s > 0 else float("inf")


@dataclass(slots=True)
class DagBenchReport:
    """Result of :func:`run_dag_benchmark`.

    Attributes
    ----------
    dag_id, size, visits, exposures
        What was run on what.
    stages
        Per-stage timings in :data:`STAGE_ORDER`.
    direct_wall_s
        The direct run, first stage start to last stage end (the spawned process's start-up
        excluded).
    direct_process_s
        The direct run's process, spawn to exit.
    dag_run_s
        The DAG run, first task start to last task end.
    dag_command_s
        The ``airflow dags test`` command, start to exit.
    airflow_setup_s
        Migrating the metadata database and creating the pool (not part of any run).
    outcome_direct, outcome_dag
        Counts each run recorded (visits, exposures, accepted, truth statuses, scored).
    load_before, load_after
        1/5/15-minute load averages when the benchmark started and ended.
    cpu_count
        Logical CPUs of the machine.
    """

    dag_id: str
    size: str
    visits: int
    exposures: int
    stages: list[StageTiming] = field(default_factory=list)
    direct_wall_s: float = 0.0
    direct_process_s: float = 0.0
    dag_run_s: float = 0.0
    dag_command_s: float = 0.0
    airflow_setup_s: float = 0.0
    outcome_direct: dict[str, Any] = field(default_factory=dict)
    outcome_dag: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpu_count: int = 0

    @property
    def same_outcome(self) -> bool:
        """Whether both runs recorded the same counts and truth statuses."""
        return self.outcome_direct == self.outcome_dag

    def rows(self) -> list[dict[str, Any]]:
        """Table rows: one per stage, then the whole-run figures."""
        rows: list[dict[str, Any]] = [
            {
                "stage": s.stage,
                "calls/tasks": f"{s.calls}/{s.tasks}",
                "direct_s": round(s.direct_s, 3),
                "dag_s": round(s.dag_s, 3),
                "overhead_s": round(s.overhead_s, 3),
                "ratio": round(s.ratio, 2),
            }
            for s in self.stages
        ]
        direct_sum = sum(s.direct_s for s in self.stages)
        dag_sum = sum(s.dag_s for s in self.stages)
        for label, direct, dag in (
            ("all stages (sum)", direct_sum, dag_sum),
            ("run wall (first start to last end)", self.direct_wall_s, self.dag_run_s),
            ("process / `airflow dags test` command", self.direct_process_s, self.dag_command_s),
        ):
            rows.append(
                {
                    "stage": label,
                    "calls/tasks": "",
                    "direct_s": round(direct, 3),
                    "dag_s": round(dag, 3),
                    "overhead_s": round(dag - direct, 3),
                    "ratio": round(dag / direct, 2) if direct > 0 else None,
                }
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {
            "dag_id": self.dag_id,
            "size": self.size,
            "visits": self.visits,
            "exposures": self.exposures,
            "rows": self.rows(),
            "airflow_setup_s": round(self.airflow_setup_s, 3),
            "same_outcome": self.same_outcome,
            "outcome_direct": self.outcome_direct,
            "outcome_dag": self.outcome_dag,
            "load_before": list(self.load_before),
            "load_after": list(self.load_after),
            "cpu_count": self.cpu_count,
        }


# ----------------------------------------------------------------------------- scratch databases
@contextmanager
def scratch_databases(settings: Settings, names: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Empty databases on the configured server, one per name (URLs with credentials); dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from crlib.db.engine import resolve_database_url

    server = resolve_database_url(settings)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    created: dict[str, str] = {}
    try:
        with admin.connect() as connection:
            for name in names:
                database = f"crlib_bench_{name}_{uuid.uuid4().hex[:8]}"
                connection.execute(text(f'CREATE DATABASE "{database}"'))
                created[name] = make_url(server).set(database=database).render_as_string(hide_password=False)
        yield created
    finally:
        with admin.connect() as connection:
            for url in created.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        admin.dispose()


def recorded_outcome(summary: dict[str, Any]) -> dict[str, Any]:
    """The counts of a run summary that two runs of the same visit must share."""
    keys = ("visits", "exposures", "accepted", "truth", "predicted", "scored", "rejected")
    return {k: summary.get(k) for k in keys}


def _run_summary(data_root: Path, run_id: str) -> dict[str, Any]:
    from crlib.pipeline.ledger import RunLedger

    summary = RunLedger(data_root, run_id).summary()
    if not summary:
        raise CrlibError(f"the benchmark's run {run_id} left no summary in its ledger")
    return summary


# ----------------------------------------------------------------------------- direct run
def direct_stage_timings(
    settings: Settings, *, run_id: str, proposal_id: int | None = None, dag_id: str = "crlib_nightly_ingest"
) -> dict[str, Any]:
    """Call every stage in order, as the DAG does, timing each call.

    Parameters
    ----------
    settings
        Settings of the run (its own data root and results database).
    run_id
        Run id.
    proposal_id
        Reprocess this proposal (the reprocessing DAG) instead of polling by release date.
    dag_id
        Recorded with the run.

    Returns
    -------
    dict
        ``seconds`` (stage -> summed seconds), ``cpu_seconds`` (stage -> CPU seconds of every thread
        of this process and of the child processes it waited for, e.g. AstroDrizzle's forks: core-seconds),
        ``calls`` (stage -> number of calls), ``wall_s``
        (first call start to last call end) and ``summary`` (:func:`~crlib.pipeline.stages.finish_run`'s).
    """
    from crlib.pipeline import stages

    seconds = dict.fromkeys(STAGE_ORDER, 0.0)
    cpu_seconds = dict.fromkeys(STAGE_ORDER, 0.0)
    calls = dict.fromkeys(STAGE_ORDER, 0)

    def timed(stage: str, function: Any, **kwargs: Any) -> Any:
        start, cpu_start = time.perf_counter(), process_and_children_cpu_seconds()
        result = function(settings, run_id=run_id, **kwargs)
        seconds[stage] += time.perf_counter() - start
        cpu_seconds[stage] += process_and_children_cpu_seconds() - cpu_start
        calls[stage] += 1
        return result

    begin = time.perf_counter()
    visits = timed("poll", stages.poll_visits, proposal_id=proposal_id, dag_id=dag_id)
    per_visit: tuple[tuple[str, Any], ...] = (
        ("fetch", stages.fetch_visit),
        ("screen", stages.screen_visit),
        ("truth", stages.truth_stage),
    )
    for name, function in per_visit:
        for visit in visits:  # the DAG maps stage by stage; keep its order
            timed(name, function, visit=visit)
    rootnames = timed("exposures", stages.list_exposures, visits=visits)
    per_exposure: tuple[tuple[str, Any], ...] = (
        ("infer", stages.infer_exposure),
        ("score", stages.score_exposure),
    )
    for name, function in per_exposure:
        for rootname in rootnames:
            timed(name, function, rootname=rootname)
    summary = timed("summary", stages.finish_run, dag_id=dag_id, advance_watermark=proposal_id is None)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "calls": calls,
        "wall_s": time.perf_counter() - begin,
        "summary": summary,
    }


def direct_in_fresh_process(
    settings: Settings, *, run_id: str, proposal_id: int | None, dag_id: str
) -> tuple[dict[str, Any], float]:
    """:func:`direct_stage_timings` in a newly spawned process; its result and the process's seconds."""
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(
            direct_stage_timings, settings, run_id=run_id, proposal_id=proposal_id, dag_id=dag_id
        ).result()
    return result, time.perf_counter() - start


# ----------------------------------------------------------------------------- DAG run
def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def airflow_task_durations(metadata_url: str, dag_id: str) -> dict[str, Any]:
    """Per-task durations of the latest run of ``dag_id`` from an Airflow metadata database.

    Parameters
    ----------
    metadata_url
        SQLAlchemy URL of the Airflow metadata database (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``).
    dag_id
        The DAG.

    Returns
    -------
    dict
        ``run_id``, ``seconds`` (task id -> summed seconds over mapped instances), ``tasks``
        (task id -> instances), ``wall_s`` (first task start to last task end) and ``states``
        (task id -> sorted set of final states).

    Raises
    ------
    CrlibError
        If the DAG has no run with task instances.
    """
    from sqlalchemy import create_engine, text

    engine = create_engine(metadata_url)
    try:
        with engine.connect() as connection:
            run = connection.execute(
                text("SELECT run_id FROM dag_run WHERE dag_id = :d ORDER BY id DESC LIMIT 1"), {"d": dag_id}
            ).first()
            if run is None:
                raise CrlibError(f"no run of {dag_id} in the Airflow metadata database")
            rows = connection.execute(
                text(
                    "SELECT task_id, state, start_date, end_date FROM task_instance "
                    "WHERE dag_id = :d AND run_id = :r"
                ),
                {"d": dag_id, "r": run[0]},
            ).all()
    finally:
        engine.dispose()
    seconds: dict[str, float] = {}
    tasks: dict[str, int] = {}
    states: dict[str, set[str]] = {}
    starts: list[dt.datetime] = []
    ends: list[dt.datetime] = []
    for task_id, state, start, end in rows:
        states.setdefault(task_id, set()).add(str(state))
        tasks[task_id] = tasks.get(task_id, 0) + 1
        if start is None or end is None:
            continue
        began, ended = _parse_time(start), _parse_time(end)
        starts.append(began)
        ends.append(ended)
        seconds[task_id] = seconds.get(task_id, 0.0) + (ended - began).total_seconds()
    if not rows:
        raise CrlibError(f"the latest run of {dag_id} has no task instances")
    return {
        "run_id": str(run[0]),
        "seconds": seconds,
        "tasks": tasks,
        "wall_s": (max(ends) - min(starts)).total_seconds() if starts else 0.0,
        "states": {k: sorted(v) for k, v in states.items()},
    }


# ----------------------------------------------------------------------------- the benchmark
def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3  # type: ignore[return-value]


def run_dag_benchmark(
    settings: Settings,
    *,
    size: Literal["full", "small"] = "full",
    exposures: int = 4,
    dag: Literal["nightly", "reprocess"] = "nightly",
    work_dir: Path | None = None,
    seed: int = 2026,
    keep: bool = False,
) -> DagBenchReport:
    """Time one simulated visit through the stages called directly and through the DAG.

    Parameters
    ----------
    settings
        Settings naming the PostgreSQL server (scratch databases are created on it and dropped),
        device and threads; the runs get their own data roots under ``work_dir``.
    size
        ``full`` (2 x 4096x2048 chips per exposure) or ``small`` (2 x 1024x512, for tests).
    exposures
        Exposures in the visit (2–8).
    dag
        ``nightly`` (``crlib_nightly_ingest``) or ``reprocess`` (``crlib_reprocess_proposal``).
    work_dir
        Where the archive, the two data roots and the Airflow home go (default: a temporary
        directory under ``<data_root>/bench``, removed afterwards unless ``keep``).
    seed
        Simulation seed.
    keep
        Keep ``work_dir`` (archive, outputs, Airflow logs) for inspection.

    Returns
    -------
    DagBenchReport

    Raises
    ------
    CrlibError
        If either run fails or a DAG task did not succeed.
    """
    import json

    from crlib.harness.airflow_runner import (
        airflow_environment,
        inference_slots,
        prepare_airflow,
        run_dag_test,
    )
    from crlib.simulate import simulate_archive

    dag_id = DAG_IDS[dag]
    if not 2 <= exposures <= 8:
        raise CrlibError(f"exposures must be 2-8 (drizzle truth needs two), got {exposures}")
    parent = settings.data_root / "bench"
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="dag-", dir=parent))
    root.mkdir(parents=True, exist_ok=True)
    report = DagBenchReport(
        dag_id=dag_id, size=size, visits=1, exposures=exposures, cpu_count=os.cpu_count() or 0
    )
    report.load_before = _load()
    try:
        archive = simulate_archive(
            root / "archive",
            visits=1,
            exposures=exposures,
            field_type="globular_cluster",
            filters=("F606W",),
            size=size,
            seed=seed,
        )
        proposal_id = archive.visits[0].proposal_id if dag == "reprocess" else None
        with scratch_databases(settings, ("direct", "dag")) as urls:
            common = {"archive": f"local:{archive.root}", "mlflow_tracking_uri": None}
            direct_settings = settings.model_copy(
                update={**common, "data_root": root / "direct", "database_url": secret_url(urls["direct"])}
            )
            dag_settings = settings.model_copy(
                update={**common, "data_root": root / "dag", "database_url": secret_url(urls["dag"])}
            )
            for prepared in (direct_settings, dag_settings):
                prepared.data_root.mkdir(parents=True, exist_ok=True)

            log.info("direct run of %d %s exposures", exposures, size)
            direct, report.direct_process_s = direct_in_fresh_process(
                direct_settings,
                run_id=f"bench__direct_{uuid.uuid4().hex[:6]}",
                proposal_id=proposal_id,
                dag_id=dag_id,
            )
            report.direct_wall_s = float(direct["wall_s"])
            report.outcome_direct = recorded_outcome(direct["summary"])

            environment = airflow_environment(dag_settings)
            start = time.perf_counter()
            prepare_airflow(environment, inference_slots=inference_slots(dag_settings))
            report.airflow_setup_s = time.perf_counter() - start
            conf = json.dumps({"proposal_id": proposal_id}) if proposal_id is not None else None
            log.info("DAG run (%s) of %d %s exposures", dag_id, exposures, size)
            start = time.perf_counter()
            run_dag_test(environment, dag_id, conf=conf)
            report.dag_command_s = time.perf_counter() - start
            tasks = airflow_task_durations(environment.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], dag_id)
            failed = {t: s for t, s in tasks["states"].items() if s != ["success"]}
            if failed:
                raise CrlibError(f"{dag_id} tasks did not all succeed: {failed}")
            report.dag_run_s = float(tasks["wall_s"])
            report.outcome_dag = recorded_outcome(_run_summary(dag_settings.data_root, tasks["run_id"]))
        for stage in STAGE_ORDER:
            report.stages.append(
                StageTiming(
                    stage=stage,
                    calls=int(direct["calls"][stage]),
                    tasks=int(tasks["tasks"].get(stage, 0)),
                    direct_s=float(direct["seconds"][stage]),
                    dag_s=float(tasks["seconds"].get(stage, 0.0)),
                )
            )
    finally:
        report.load_after = _load()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if not report.same_outcome:
        log.warning(
            "direct and DAG runs recorded different outcomes: %s vs %s",
            report.outcome_direct,
            report.outcome_dag,
        )
    return report


def secret_url(url: str) -> Any:
    """``url`` as the settings' secret type (never printed)."""
    from pydantic import SecretStr

    return SecretStr(url)
