"""A local Airflow cluster on the CeleryExecutor: the distributed deployment on one machine.

Everything is started through the ``airflow`` command line (subprocesses: crlib never imports
Airflow): the Airflow metadata database and the Celery result backend on PostgreSQL, a Celery
broker (Redis, see :class:`~crlib.harness.services.RedisServer`), the api-server (Celery workers
run tasks through its execution API, so every process shares one JWT secret), the scheduler, the
dag-processor, optionally the triggerer, and any number of Celery workers, each with its own
queues and concurrency. Each process writes its output to ``<home>/logs/cluster/<name>.log``;
every error names the log to read.

Workers report ``crlib-<worker name>`` as their host name (:func:`worker_hostname` is their
``[core] hostname_callable``), so ``task_instance.hostname`` tells which worker ran a task even
when all of them share one machine. What the cluster starts (:class:`WorkerSpec`,
:class:`ClusterConfig`) is in :mod:`crlib.harness.cluster_config`.

Examples
--------
>>> with RedisServer(work) as redis:                                          # doctest: +SKIP
...     config = ClusterConfig(metadata_url=create_database(server, "airflow"), broker_url=redis.url)
...     with LocalCluster(settings, config) as cluster:
...         run_id = cluster.trigger("crlib_reprocess_proposal", conf={"proposal_id": 10775})
...         cluster.wait_for_run("crlib_reprocess_proposal", run_id)
'success'
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from crlib.config import Settings
from crlib.errors import ConfigError
from crlib.harness.airflow_runner import airflow_environment, prepare_airflow
from crlib.harness.cluster_config import ClusterConfig, WorkerSpec
from crlib.harness.services import Service, ServiceError, create_database, free_port, spawn, wait_until

log = logging.getLogger(__name__)

#: Environment variable naming a worker (read by :func:`worker_hostname` inside the worker).
WORKER_NAME_ENV = "CRLIB_CLUSTER_WORKER"
_FINISHED = ("success", "failed")


def worker_hostname() -> str:
    """Host name a Celery worker reports for its task instances (``[core] hostname_callable``).

    ``crlib-<name>`` when :data:`WORKER_NAME_ENV` is set (workers started by :class:`LocalCluster`),
    else the machine's fully qualified name.
    """
    name = os.environ.get(WORKER_NAME_ENV, "").strip()
    return f"crlib-{name}" if name else socket.getfqdn()


def _cluster_secrets(home: Path) -> dict[str, str]:
    """JWT, API and Fernet secrets shared by every process; kept (mode 0600) across restarts."""
    path = home / "cluster-secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "api_secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump(values, stream)
    return values


# ----------------------------------------------------------------------------- the cluster
@dataclass(frozen=True, slots=True)
class TaskRun:
    """One try of one task instance, as the metadata database recorded it."""

    task_id: str
    map_index: int
    try_number: int
    state: str | None
    hostname: str
    queue: str
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None


class LocalCluster:
    """Start, watch and stop an Airflow CeleryExecutor cluster on this machine.

    Parameters
    ----------
    settings
        crlib settings passed to every process as ``CRLIB_*``. Set ``database_url``: every process
        must reach the same results database (the scheduler's listener records runs there too).
    config
        Databases, broker, workers and Airflow options.
    """

    def __init__(self, settings: Settings, config: ClusterConfig) -> None:
        if settings.database_url is None:
            raise ConfigError("the cluster needs CRLIB_DATABASE_URL (one results database for all processes)")
        self.settings = settings
        self.config = config
        self.api_port = config.api_port or free_port(config.api_host)
        self.home = (config.home or settings.data_root / "airflow-cluster").resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.home / "logs" / "cluster"
        base = airflow_environment(settings, metadata_url=config.metadata_url)
        self.environment = dataclasses.replace(base, home=self.home, env=self._environment(base.env))
        self._services: dict[str, Service] = {}
        self._workers: dict[str, Service] = {}
        self._log_offsets: dict[str, int] = {}  # where each worker's current start begins in its log

    @property
    def api_url(self) -> str:
        """Base URL of the api-server (UI, REST and execution API)."""
        return f"http://{self.config.api_host}:{self.api_port}"

    def _environment(self, base: Mapping[str, str]) -> dict[str, str]:
        config = self.config
        keys = _cluster_secrets(self.home)
        env = dict(base)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                "AIRFLOW__API__HOST": config.api_host,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                "AIRFLOW__CELERY__BROKER_URL": config.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{config.metadata_url}",
                # warm pool processes: tasks fork from them with the inference stack loaded
                "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "crlib_airflow.celery_config.CELERY_CONFIG",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": config.default_queue,
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(max(1, config.heartbeat_interval_s)),
            }
        )
        env.pop("CRLIB_INFERENCE_QUEUE", None)
        if config.inference_queue:
            env["CRLIB_INFERENCE_QUEUE"] = config.inference_queue
        if config.heartbeat_timeout_s is not None:
            timeout = max(int(config.heartbeat_timeout_s), 4 * max(1, config.heartbeat_interval_s))
            env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(timeout)
            env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"] = "2"
        if self.settings.threads:  # one thread per task for BLAS/OpenMP inside the stages too
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[name] = str(self.settings.threads)
        for key, value in config.airflow_config.items():
            section, _, option = key.partition(".")
            env[f"AIRFLOW__{section.upper()}__{option.upper()}"] = str(value)
        return env

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, timeout: float = 300) -> None:
        """Migrate the metadata database, start every service and worker, wait until all are ready.

        Raises
        ------
        ServiceError
            If a process exits or is not ready in time; the message names its log file.
        """
        log.info("preparing the Airflow metadata database (AIRFLOW_HOME %s)", self.home)
        prepare_airflow(self.environment, inference_slots=self.config.inference_slots)
        host, port = self.config.api_host, str(self.api_port)
        self._start_service("api-server", ["api-server", "--host", host, "--port", port])
        self._start_service("scheduler", ["scheduler"])
        self._start_service("dag-processor", ["dag-processor"])
        if self.config.triggerer:
            self._start_service("triggerer", ["triggerer"])
        for worker in self.config.workers:
            self.start_worker(worker, wait=False)
        self.wait_healthy(timeout=timeout)
        for worker in self.config.workers:
            self.wait_worker_ready(worker.name, timeout=timeout)

    def _start_service(self, name: str, args: list[str]) -> None:
        command = [self.environment.airflow_executable(), *args]
        self._services[name] = spawn(
            name, command, env=self.environment.env, log_path=self.log_dir / f"{name}.log", cwd=self.home
        )

    @property
    def workers(self) -> list[str]:
        """Names of the workers started and not stopped."""
        return list(self._workers)

    def worker_log(self, name: str) -> Path:
        """Log file of worker ``name``."""
        return self.log_dir / f"worker-{name}.log"

    def start_worker(self, worker: WorkerSpec, *, wait: bool = True, timeout: float = 180) -> None:
        """Start a Celery worker (``airflow celery worker``) serving ``worker.queues``.

        Raises
        ------
        ServiceError
            If a worker of that name is running, or (``wait``) it exits or is not ready in time.
        """
        if worker.name in self._workers and self._workers[worker.name].alive():
            raise ServiceError(f"worker {worker.name!r} is already running")
        env = {**self.environment.env, **worker.env, WORKER_NAME_ENV: worker.name}
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = f"{__name__}.worker_hostname"
        log_path = self.worker_log(worker.name)
        self._log_offsets[worker.name] = log_path.stat().st_size if log_path.exists() else 0
        command = [
            self.environment.airflow_executable(), "celery", "worker",
            "--queues", ",".join(worker.queues),
            "--concurrency", str(worker.concurrency),
            "--celery-hostname", f"{worker.name}@%h",
            # Workers share this machine (and the log-server port); the api-server reads the task
            # logs from the shared log folder instead.
            "--skip-serve-logs",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self._workers[worker.name] = spawn(
            f"worker {worker.name}", command, env=env, log_path=log_path, cwd=self.home
        )
        if wait:
            self.wait_worker_ready(worker.name, timeout=timeout)

    def wait_worker_ready(self, name: str, *, timeout: float = 180) -> None:
        """Wait until worker ``name`` consumes from the broker (Celery logs ``<name>@<host> ready.``)."""
        service = self._workers[name]
        offset = self._log_offsets.get(name, 0)

        def ready() -> bool:
            try:
                with service.log_path.open("rb") as stream:
                    stream.seek(offset)
                    return b" ready." in stream.read()
            except OSError:
                return False

        wait_until(
            ready,
            timeout=timeout,
            what=f"Celery worker {name!r}",
            watch=service.raise_if_dead,
            hint=f"see {service.log_path}",
        )

    def stop_worker(self, name: str, *, kill: bool = False, timeout: float = 60) -> None:
        """Stop worker ``name``: warm shutdown (SIGTERM), or ``kill=True``: SIGKILL to its whole group.

        ``kill=True`` is a machine dying mid-task: the worker, its pool processes and the running
        tasks vanish without telling anyone, and the scheduler notices only by missing heartbeats.
        """
        service = self._workers.pop(name, None)
        if service is None:
            raise ServiceError(f"no running worker named {name!r}")
        if kill:
            service.kill()
            log.info("killed worker %s", name)
        else:
            service.stop(timeout=timeout)

    def health(self) -> dict[str, Any] | None:
        """The api-server's ``/api/v2/monitor/health`` answer, or ``None`` if it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=3) as response:
                return dict(json.loads(response.read()))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_healthy(self, *, timeout: float = 300) -> None:
        """Wait until the api-server reports a healthy metadatabase, scheduler and dag-processor."""
        parts = [
            "metadatabase",
            "scheduler",
            "dag_processor",
            *(["triggerer"] if self.config.triggerer else []),
        ]
        logs = ", ".join(str(s.log_path) for s in self._services.values())

        def healthy() -> bool:
            health = self.health()
            return health is not None and all((health.get(p) or {}).get("status") == "healthy" for p in parts)

        wait_until(
            healthy,
            timeout=timeout,
            what=f"a healthy cluster at {self.api_url}",
            watch=self.check,
            hint=f"see {logs}",
        )

    def check(self) -> None:
        """Raise :class:`ServiceError` (naming the log) if a service or worker has exited."""
        for service in (*self._services.values(), *self._workers.values()):
            service.raise_if_dead()

    def stop(self, *, timeout: float = 60) -> None:
        """Stop the workers (warm shutdown), then the services; idempotent."""
        for name in list(self._workers):
            self.stop_worker(name, timeout=timeout)
        for name in reversed(list(self._services)):
            self._services.pop(name).stop(timeout=timeout)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop(timeout=15)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ DAG runs
    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an ``airflow`` command in the cluster's environment; returns its standard output.

        Raises
        ------
        ServiceError
            If it fails (with the end of its output).
        """
        command = [self.environment.airflow_executable(), *args]
        result = subprocess.run(
            command, env=self.environment.env, capture_output=True, text=True, timeout=timeout, cwd=self.home
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise ServiceError(f"`airflow {' '.join(args[:3])}` failed (exit {result.returncode}):\n{tail}")
        return result.stdout

    @contextlib.contextmanager
    def metadata(self) -> Iterator[Any]:
        """A connection to the metadata database, for reading (Airflow owns that schema)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.config.metadata_url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    def wait_for_dag(self, dag_id: str, *, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed and serialised ``dag_id``."""
        from sqlalchemy import text

        def parsed() -> bool:
            with self.metadata() as connection:
                found = connection.execute(
                    text("SELECT 1 FROM serialized_dag WHERE dag_id = :d"), {"d": dag_id}
                )
                return found.first() is not None

        wait_until(
            parsed,
            timeout=timeout,
            what=f"DAG {dag_id} to be parsed",
            watch=self.check,
            hint=f"see {self.log_dir / 'dag-processor.log'} and {self.home / 'logs' / 'dag_processor'}",
            interval=1.0,
        )

    def trigger(self, dag_id: str, *, conf: Mapping[str, Any], run_id: str | None = None) -> str:
        """Unpause ``dag_id`` and trigger a run with ``conf`` (``airflow dags trigger``); return its id."""
        self.wait_for_dag(dag_id)
        self.airflow("dags", "unpause", dag_id)
        run_id = run_id or f"manual__crlib_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
        self.airflow("dags", "trigger", dag_id, "--conf", json.dumps(dict(conf)), "--run-id", run_id)
        log.info("triggered %s run %s", dag_id, run_id)
        return run_id

    def run_times(
        self, dag_id: str, run_id: str
    ) -> tuple[str | None, dt.datetime | None, dt.datetime | None]:
        """``(state, start, end)`` of a DAG run (``(None, None, None)`` when unknown)."""
        from sqlalchemy import text

        with self.metadata() as connection:
            row = connection.execute(
                text("SELECT state, start_date, end_date FROM dag_run WHERE dag_id = :d AND run_id = :r"),
                {"d": dag_id, "r": run_id},
            ).first()
        return (None, None, None) if row is None else (str(row[0]), row[1], row[2])

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float = 1800) -> str:
        """Wait until the run has finished; return its state (``success`` or ``failed``).

        Raises
        ------
        ServiceError
            If a process dies, or the run is still going after ``timeout`` s (with its task states).
        """
        state: list[str | None] = [None]

        def finished() -> bool:
            state[0] = self.run_times(dag_id, run_id)[0]
            return state[0] in _FINISHED

        try:
            wait_until(
                finished,
                timeout=timeout,
                what=f"run {run_id} of {dag_id}",
                watch=self.check,
                hint=f"process logs in {self.log_dir}",
                interval=1.0,
            )
        except ServiceError as exc:
            tasks = ", ".join(f"{t.task_id}[{t.map_index}]={t.state}" for t in self.task_runs(dag_id, run_id))
            raise ServiceError(f"{exc}; tasks: {tasks or 'none'}") from None
        return str(state[0])

    def task_runs(self, dag_id: str, run_id: str, *, history: bool = False) -> list[TaskRun]:
        """Task instances of a run from the metadata database; ``history=True`` adds earlier tries."""
        from sqlalchemy import text

        columns = "task_id, map_index, try_number, state, hostname, queue, queued_dttm, start_date, end_date"
        runs: list[TaskRun] = []
        with self.metadata() as connection:
            for table in ("task_instance", *(("task_instance_history",) if history else ())):
                rows = connection.execute(
                    text(f"SELECT {columns} FROM {table} WHERE dag_id = :d AND run_id = :r"),
                    {"d": dag_id, "r": run_id},
                )
                for row in rows:
                    runs.append(
                        TaskRun(
                            task_id=row[0],
                            map_index=int(row[1]),
                            try_number=int(row[2] or 0),
                            state=row[3],
                            hostname=row[4] or "",
                            queue=row[5] or "",
                            queued_at=row[6],
                            started_at=row[7],
                            ended_at=row[8],
                        )
                    )
        return sorted(runs, key=lambda t: (t.task_id, t.map_index, t.try_number))


@contextlib.contextmanager
def local_cluster(
    settings: Settings,
    *,
    workers: tuple[WorkerSpec, ...],
    metadata_database: str = "airflow",
    broker_url: str | None = None,
    home: Path | None = None,
    api_port: int | None = None,
    inference_queue: str | None = "gpu",
    inference_slots: int = 2,
    triggerer: bool = False,
) -> Iterator[LocalCluster]:
    """Run a cluster beside the configured (or embedded) results database until the block ends.

    The Airflow metadata database ``metadata_database`` is created on the results database's
    server; without ``broker_url`` a private redis-server runs under ``<home>/redis``.

    Parameters
    ----------
    settings
        crlib settings; ``CRLIB_DATABASE_URL`` unset means the embedded PostgreSQL.
    workers
        Celery workers to start.
    metadata_database
        Name of the Airflow metadata database on the same server.
    broker_url
        An existing Celery broker instead of a private redis-server.
    home, api_port, inference_queue, inference_slots, triggerer
        See :class:`ClusterConfig`.
    """
    from pydantic import SecretStr

    from crlib.db.engine import resolve_database_url
    from crlib.db.session import open_results_db
    from crlib.harness.services import RedisServer

    results_url = resolve_database_url(settings)
    run_settings = settings.model_copy(update={"database_url": SecretStr(results_url)})
    open_results_db(run_settings, upgrade=True)[0].dispose()
    home = (home or settings.data_root / "airflow-cluster").resolve()
    with contextlib.ExitStack() as stack:
        if broker_url is None:
            broker_url = stack.enter_context(RedisServer(home / "redis")).url
        config = ClusterConfig(
            metadata_url=create_database(results_url, metadata_database),
            broker_url=broker_url,
            workers=workers,
            home=home,
            api_port=api_port,
            inference_queue=inference_queue,
            inference_slots=inference_slots,
            triggerer=triggerer,
        )
        yield stack.enter_context(LocalCluster(run_settings, config))
