"""What a local Airflow cluster starts: its Celery workers and its configuration.

:class:`WorkerSpec` is one Celery worker (name, queues, task slots; ``crlib cluster --worker
name=queue[,queue...][:slots]``), :class:`ClusterConfig` everything
:class:`~crlib.harness.cluster.LocalCluster` starts (metadata database, broker, workers, queues,
api-server, heartbeats, further Airflow settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crlib.errors import ConfigError


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One Celery worker: a name (host name ``crlib-<name>``), the queues it serves, its task slots.

    Attributes
    ----------
    name
        Letters, digits and ``-``.
    queues
        Celery queues it consumes (``cpu``, ``gpu`` ...).
    concurrency
        Tasks it runs at once.
    env
        Extra environment for this worker only (e.g. ``CUDA_VISIBLE_DEVICES``).
    """

    name: str
    queues: tuple[str, ...]
    concurrency: int = 1
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").isalnum():
            raise ConfigError(f"worker name {self.name!r} must be letters, digits and '-'")
        if not self.queues or any(not q or "," in q for q in self.queues):
            raise ConfigError(f"worker {self.name!r} needs one or more queue names (got {self.queues!r})")
        if self.concurrency < 1:
            raise ConfigError(f"worker {self.name!r}: concurrency must be >= 1")

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        """Parse ``name=queue[,queue...][:concurrency]``, e.g. ``gpu=gpu,cpu:2``."""
        name, _, rest = text.partition("=")
        queues, _, slots = rest.partition(":")
        try:
            concurrency = int(slots) if slots else 1
        except ValueError:
            raise ConfigError(f"worker {text!r}: concurrency {slots!r} is not a number") from None
        names = tuple(q.strip() for q in queues.split(",")) if queues else ()
        return cls(name=name.strip(), queues=names, concurrency=concurrency)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What :class:`~crlib.harness.cluster.LocalCluster` starts.

    Attributes
    ----------
    metadata_url
        SQLAlchemy URL of an existing PostgreSQL database for Airflow's metadata, also the Celery
        result backend (``db+<url>``). Unix-socket form: ``postgresql+psycopg2://u@/db?host=/dir``.
    broker_url
        Celery broker, e.g. ``redis://127.0.0.1:6379/0``.
    workers
        Celery workers started with the cluster (more with
        :meth:`~crlib.harness.cluster.LocalCluster.start_worker`).
    home
        ``AIRFLOW_HOME`` (default ``<data_root>/airflow-cluster``); process logs in ``logs/cluster``.
    api_host, api_port
        Where the api-server listens (port default: a free one).
    default_queue
        ``[operators] default_queue``: the queue of every task that names none.
    inference_queue
        ``CRLIB_INFERENCE_QUEUE`` when the DAG files are parsed (the inference tasks' queue);
        ``None``: inference uses the default queue too.
    inference_slots
        Size of the ``crlib_inference`` pool.
    triggerer
        Also run the triggerer (only deferrable tasks need one; crlib's DAGs have none).
    heartbeat_timeout_s
        ``[scheduler] task_instance_heartbeat_timeout``: a running task without a heartbeat for
        this long (its worker died) is failed and retried. ``None``: Airflow's default (300 s).
    heartbeat_interval_s
        ``[workers] min_heartbeat_interval``. Airflow 3.3's task supervisor also notices that its
        task has exited only at this pace, so it is up to this many seconds of dead time per task
        (Airflow's default 5 s measured as +5 s on every task); 1 s costs one small API call a second.
    airflow_config
        Further settings as ``{"section.option": value}`` (``AIRFLOW__SECTION__OPTION``).
    """

    metadata_url: str
    broker_url: str
    workers: tuple[WorkerSpec, ...] = (WorkerSpec("cpu", ("cpu",)), WorkerSpec("gpu", ("gpu",)))
    home: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int | None = None
    default_queue: str = "cpu"
    inference_queue: str | None = "gpu"
    inference_slots: int = 2
    triggerer: bool = False
    heartbeat_timeout_s: int | None = None
    heartbeat_interval_s: int = 1
    airflow_config: Mapping[str, str] = field(default_factory=dict)
