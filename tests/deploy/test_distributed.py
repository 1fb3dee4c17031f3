"""A real distributed run: Airflow's CeleryExecutor with two Celery workers started from this venv.

One cluster per module (crlib.harness.cluster): a private redis-server on a free port as the
broker, Airflow metadata and Celery results in PostgreSQL (the session's test server), api-server,
scheduler and dag-processor. Each test starts its own two workers. Inference tasks are routed to
the ``gpu`` queue (``CRLIB_INFERENCE_QUEUE=gpu`` when the DAGs are parsed), every other task goes
to the default queue ``cpu``. The simulated proposal (2 visits x 3 small exposures) is also run
once with ``airflow dags test`` (one process) into a separate results database: the reference the
distributed runs must reproduce row for row.

The cluster tests need ``redis-server`` (Debian package ``redis-server``) and are skipped with
that reason without it. The fast tests at the top check the pieces without starting Airflow.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crlib.harness.cluster import LocalCluster, TaskRun
from crlib.harness.cluster_config import ClusterConfig, WorkerSpec
from crlib.harness.services import RedisServer, redis_server_binary

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (apt-get install redis-server); CI installs it",
)

log = logging.getLogger(__name__)

DAG_ID = "crlib_reprocess_proposal"
PROPOSAL = 10775
EXPOSURES = 6
RUN_TIMEOUT_S = 600

#: Natural keys and the values that must agree between runs (timings and paths left out).
SNAPSHOT_QUERIES = {
    "exposures": "SELECT rootname, visit, proposal_id, filter, exptime_s FROM exposures",
    "screening_verdicts": "SELECT rootname, verdict, usable_for_training FROM screening_verdicts",
    "screening_reasons": "SELECT rootname, position, rule, severity FROM screening_reasons",
    "alignment_results": (
        "SELECT visit, status, catalog, fit_geometry, n_matches, rms_px FROM alignment_results"
    ),
    "truth_results": "SELECT rootname, method, status FROM truth_results",
    "truth_chips": "SELECT rootname, method, chip, cr_pixels, cr_events, valid_fraction FROM truth_chips",
    "predictions": "SELECT rootname, code_version, threshold, device, status FROM predictions",
    "exposure_metrics": "SELECT rootname, field_type, tp, fp, fn, tn, tpr_at_fpr FROM exposure_metrics",
    "cr_statistics": "SELECT rootname, chip, cr_pixels, cr_events, rate_per_cm2_s FROM cr_statistics",
}


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    return value


def _snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every results table's rows (key columns and values), sorted; equal snapshots = equal results."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table: sorted(tuple(_plain(v) for v in row) for row in connection.execute(text(sql)))
                for table, sql in SNAPSHOT_QUERIES.items()
            }
    finally:
        engine.dispose()


def _settings(data_root: Path, archive_root: Path, database_url: str):
    from crlib.config import load_settings

    return load_settings(
        data_root=data_root,
        archive=f"local:{archive_root}",
        database_url=database_url,
        threads=1,
        device="cpu",
    )


# ----------------------------------------------------------------------------- fast checks
def test_worker_spec_parses_queues_and_concurrency_and_rejects_nonsense() -> None:
    from crlib.errors import ConfigError

    spec = WorkerSpec.parse("gpu=gpu,cpu:2")
    assert (spec.name, spec.queues, spec.concurrency) == ("gpu", ("gpu", "cpu"), 2)
    assert WorkerSpec.parse("cpu=cpu") == WorkerSpec("cpu", ("cpu",), 1)
    for bad in ("gpu", "=cpu", "a=cpu:x", "a b=cpu", "a=cpu:0", "a=cpu,,gpu"):
        with pytest.raises(ConfigError):
            WorkerSpec.parse(bad)


def test_cluster_environment_wires_celery_queues_and_shared_secrets(tmp_path: Path) -> None:
    from crlib.errors import ConfigError

    metadata = "postgresql+psycopg2://airflow@/airflow?host=/run/pg"
    config = ClusterConfig(metadata_url=metadata, broker_url="redis://127.0.0.1:1/0", home=tmp_path / "home")
    with pytest.raises(ConfigError, match="CRLIB_DATABASE_URL"):
        LocalCluster(_settings(tmp_path, tmp_path, "x").model_copy(update={"database_url": None}), config)
    settings = _settings(tmp_path / "data", tmp_path, "postgresql+psycopg2://crlib@/crlib?host=/run/pg")
    env = LocalCluster(settings, config).environment.env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{metadata}"
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "crlib_airflow.celery_config.CELERY_CONFIG"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == metadata
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "cpu"
    assert env["CRLIB_INFERENCE_QUEUE"] == "gpu"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert env["OMP_NUM_THREADS"] == "1"  # threads=1 reaches BLAS/OpenMP too
    # One JWT secret for every process, kept private and reused when the cluster restarts.
    secrets_file = tmp_path / "home" / "cluster-secrets.json"
    assert secrets_file.stat().st_mode & 0o077 == 0
    again = LocalCluster(settings, config).environment.env
    assert again["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32


def test_a_dead_service_is_reported_with_its_log(tmp_path: Path) -> None:
    import os

    from crlib.harness.services import ServiceError, spawn, wait_until

    service = spawn(
        "doomed",
        ["sh", "-c", "echo cannot bind port; exit 3"],
        env=os.environ,
        log_path=tmp_path / "d.log",
        cwd=tmp_path,
    )
    with pytest.raises(ServiceError, match=r"doomed exited with status 3; see .*d\.log:\ncannot bind port"):
        wait_until(lambda: False, timeout=30, what="doom", watch=service.raise_if_dead, hint="")


@needs_redis
def test_private_redis_server_answers_and_stops(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis:
        assert redis.ping() and redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert not redis.ping()


# ----------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def proposal_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("proposal-archive")
    simulate_archive(
        root, visits=2, exposures=3, field_type="mixed", size="small", seed=41, proposal_id=PROPOSAL
    )
    return root


@pytest.fixture(scope="module")
def databases(postgres_server_url: str) -> Iterator[dict[str, str]]:
    """Airflow metadata, cluster results and reference results databases (dropped afterwards)."""
    from crlib.db.engine import make_engine
    from crlib.db.migrate import upgrade
    from crlib.harness.services import create_database, drop_database

    suffix = uuid.uuid4().hex[:10]
    names = {role: f"crlib_{role}_{suffix}" for role in ("airflow", "results", "reference")}
    urls = {role: create_database(postgres_server_url, name) for role, name in names.items()}
    for role in ("results", "reference"):  # migrated once here, not raced by concurrent tasks
        engine = make_engine(urls[role])
        upgrade(engine)
        engine.dispose()
    try:
        yield urls
    finally:
        for name in names.values():
            drop_database(postgres_server_url, name)


class Reference:
    """``airflow dags test`` of the same proposal (one process, every task in turn), run in the
    background while the cluster starts and runs; :meth:`snapshot` waits for it."""

    def __init__(self, work: Path, archive: Path, database_url: str) -> None:
        from crlib.harness.airflow_runner import airflow_environment, prepare_airflow

        environment = airflow_environment(_settings(work, archive, database_url))
        prepare_airflow(environment)  # sqlite metadata: a few seconds
        self.database_url = database_url
        self.log_path = work / "dags-test.log"
        command = [environment.airflow_executable(), "dags", "test", DAG_ID]
        command += ["--conf", json.dumps({"proposal_id": PROPOSAL})]
        with self.log_path.open("wb") as stream:
            self.process = subprocess.Popen(
                command, env=environment.env, stdout=stream, stderr=subprocess.STDOUT, cwd=work
            )
        self._snapshot: dict[str, list[tuple[Any, ...]]] | None = None

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        if self._snapshot is None:
            code = self.process.wait(timeout=RUN_TIMEOUT_S)
            tail = self.log_path.read_text(errors="replace")[-3000:]
            assert code == 0, f"airflow dags test failed ({code}):\n{tail}"
            self._snapshot = _snapshot(self.database_url)
            assert len(self._snapshot["exposure_metrics"]) == EXPOSURES, self._snapshot
        return self._snapshot

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, proposal_archive: Path, databases: dict[str, str]
) -> Iterator[Reference]:
    started = Reference(tmp_path_factory.mktemp("reference"), proposal_archive, databases["reference"])
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, proposal_archive: Path, databases: dict[str, str]
) -> Iterator[LocalCluster]:
    work = tmp_path_factory.mktemp("cluster")
    settings = _settings(work / "data", proposal_archive, databases["results"])
    with RedisServer(work / "redis") as redis:
        config = ClusterConfig(
            metadata_url=databases["airflow"],
            broker_url=redis.url,
            workers=(),  # each test starts its own
            home=work / "airflow",
            default_queue="cpu",
            inference_queue="gpu",
            heartbeat_timeout_s=20,  # a dead worker's task is failed (and retried) after 20 s, not 5 min
        )
        with LocalCluster(settings, config) as running:
            yield running


@pytest.fixture
def workers(cluster: LocalCluster) -> Iterator[Callable[..., None]]:
    """Start workers for one test; whatever is still running is stopped afterwards."""

    def start(*specs: WorkerSpec) -> None:
        for spec in specs:
            cluster.start_worker(spec, wait=False)
        for spec in specs:
            cluster.wait_worker_ready(spec.name)

    yield start
    for name in cluster.workers:
        cluster.stop_worker(name, timeout=30)


def _describe(tasks: list[TaskRun]) -> str:
    return "; ".join(
        f"{t.task_id}[{t.map_index}]#{t.try_number} {t.state} {t.hostname} {t.queue}" for t in tasks
    )


def _results_run_status(database_url: str, run_id: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT status FROM pipeline_runs WHERE run_id = :r"), {"r": run_id}
            )
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.slow
@needs_redis
def test_tasks_run_on_both_workers_by_queue_and_results_match_one_process(
    reference: Reference, cluster: LocalCluster, workers: Callable[..., None], databases: dict[str, str]
) -> None:
    workers(WorkerSpec("cpu", ("cpu",)), WorkerSpec("gpu", ("gpu",)))
    run_id = cluster.trigger(DAG_ID, conf={"proposal_id": PROPOSAL})
    assert cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S) == "success"

    tasks = cluster.task_runs(DAG_ID, run_id)
    assert tasks and all(t.state == "success" for t in tasks), _describe(tasks)
    infer = [t for t in tasks if t.task_id == "infer"]
    others = [t for t in tasks if t.task_id != "infer"]
    assert len(infer) == EXPOSURES, _describe(tasks)
    # Inference only on the gpu queue and its worker; everything else on the cpu worker.
    assert {(t.queue, t.hostname) for t in infer} == {("gpu", "crlib-gpu")}, _describe(infer)
    assert {(t.queue, t.hostname) for t in others} == {("cpu", "crlib-cpu")}, _describe(others)
    assert {t.task_id for t in others} >= {
        "poll",
        "fetch",
        "screen",
        "truth",
        "exposures",
        "score",
        "summary",
    }

    # The inference worker's pool process warmed up before its first task (crlib_airflow.celery_config)
    # and the tasks forked from it predicted with the models it had loaded.
    assert "warm inference process" in cluster.worker_log("gpu").read_text()

    # Same rows, same values as the single-process run; the scheduler's listener recorded the run.
    assert _snapshot(databases["results"]) == reference.snapshot()
    assert _results_run_status(databases["results"], run_id) == [("success",)]


def _wait_for_running(
    cluster: LocalCluster, run_id: str, *, hostname: str, tasks: tuple[str, ...]
) -> TaskRun:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        cluster.check()
        running = [
            t
            for t in cluster.task_runs(DAG_ID, run_id)
            if t.state == "running" and t.hostname == hostname and t.task_id in tasks
        ]
        if running:
            return running[0]
        if cluster.run_times(DAG_ID, run_id)[0] in ("success", "failed"):
            break
        time.sleep(0.2)
    pytest.fail(f"no {tasks} task ran on {hostname}: {_describe(cluster.task_runs(DAG_ID, run_id))}")


@pytest.mark.slow
@needs_redis
def test_killed_worker_tasks_are_retried_on_the_other_without_duplicates(
    reference: Reference, cluster: LocalCluster, workers: Callable[..., None], databases: dict[str, str]
) -> None:
    # The gpu worker also serves the cpu queue (a GPU node takes CPU work when idle), so the cpu
    # worker's tasks have somewhere to go when it dies; killing the only gpu worker instead would
    # leave inference queued until a gpu worker returns, which is Airflow's correct behaviour.
    workers(WorkerSpec("cpu", ("cpu",)), WorkerSpec("gpu", ("gpu", "cpu")))
    run_id = cluster.trigger(DAG_ID, conf={"proposal_id": PROPOSAL})
    victim = _wait_for_running(cluster, run_id, hostname="crlib-cpu", tasks=("truth", "score"))
    killed_at = time.time()
    cluster.stop_worker("cpu", kill=True)  # SIGKILL to the worker, its pool and the running task
    log.info("killed worker cpu while it ran %s[%d]", victim.task_id, victim.map_index)

    assert cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S) == "success"
    history = cluster.task_runs(DAG_ID, run_id, history=True)
    tries = [t for t in history if (t.task_id, t.map_index) == (victim.task_id, victim.map_index)]
    first, last = tries[0], tries[-1]
    assert (first.try_number, first.hostname) == (victim.try_number, "crlib-cpu"), _describe(tries)
    assert first.state != "success", _describe(tries)
    assert last.try_number > first.try_number, _describe(tries)
    assert (last.state, last.hostname) == ("success", "crlib-gpu"), _describe(tries)
    assert last.started_at is not None
    log.info("retried on crlib-gpu %.0f s after the kill", last.started_at.timestamp() - killed_at)
    final = cluster.task_runs(DAG_ID, run_id)
    assert all(t.state == "success" for t in final), _describe(final)
    later = [t for t in final if t.started_at is not None and t.started_at.timestamp() > killed_at]
    assert later and {t.hostname for t in later} == {"crlib-gpu"}, _describe(later)

    # Reprocessing (and the killed try's partial writes) replaced rows; nothing was duplicated.
    assert _snapshot(databases["results"]) == reference.snapshot()
    assert _results_run_status(databases["results"], run_id) == [("success",)]
