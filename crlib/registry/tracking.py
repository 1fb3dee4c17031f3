"""Connecting to the MLflow tracking server / store (the system of record for runs and models).

The tracking URI comes from :meth:`crlib.config.Settings.resolved_mlflow_uri`: an ``http://``
server in production (see :mod:`crlib.registry.server`), a local file store under the data root
in embedded mode, or ``sqlite:///...``. The same URI serves as the model-registry URI.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: Experiment that holds training runs, per instrument (``crlib-train-acs_wfc``).
EXPERIMENT_PREFIX = "crlib-train-"
#: Experiment that holds bootstrap/registration runs for shipped weights and gate evaluations.
REGISTRY_EXPERIMENT = "crlib-registry"


def disable_telemetry() -> None:
    """Turn MLflow's usage telemetry off for this process (and its children)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def prepare_environment(tracking_uri: str) -> None:
    """Process settings MLflow needs before touching ``tracking_uri``.

    Telemetry is always disabled. MLflow 3.17 refuses the ``file://`` store (embedded mode's
    default, ``Settings.resolved_mlflow_uri()``) unless ``MLFLOW_ALLOW_FILE_STORE=true``; the file
    store still supports runs, the registry and aliases, so crlib opts in for ``file:`` URIs, and
    makes such a store MLflow's process-wide tracking URI too (its registry reads logged models
    through that URI, and would otherwise create ``./mlflow.db``).
    """
    disable_telemetry()
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        # MLflow's file model-registry store reads each version's logged model through a bare
        # ``MlflowClient()`` (its own TODO in ``_get_file_model_version_from_dir``), i.e. through the
        # process-wide tracking URI; unset, that is ``sqlite:///mlflow.db`` in the current directory,
        # which it creates. Point it at this store, the one the process is configured with.
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifact location for a new experiment: beside a ``sqlite:///`` database, else MLflow's default.

    A SQL backend without a server would otherwise put artifacts in ``./mlruns`` of whatever the
    current directory happens to be.
    """
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return (database.parent / "mlartifacts" / experiment).as_uri()
    return None


def local_store_path(tracking_uri: str) -> Path | None:
    """Path of a local store (``file:``, ``sqlite:///`` or a plain path); ``None`` for servers."""
    from urllib.parse import unquote, urlparse

    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    if tracking_uri.startswith("file:"):
        return Path(unquote(urlparse(tracking_uri).path))
    if "://" not in tracking_uri and ":" not in tracking_uri.split("/")[0]:
        return Path(tracking_uri)
    return None


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for tracking and registry on ``tracking_uri`` (telemetry off)."""
    prepare_environment(tracking_uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextlib.contextmanager
def active_tracking(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``) at ``tracking_uri`` for a block."""
    prepare_environment(tracking_uri)
    import mlflow

    previous_tracking = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_registry_env = os.environ.get("MLFLOW_REGISTRY_URI")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]  # None unsets it
        mlflow.set_registry_uri(previous_registry_env)  # type: ignore[arg-type]
        if previous_registry_env is None:
            os.environ.pop("MLFLOW_REGISTRY_URI", None)


def experiment_id(client: MlflowClient, name: str) -> str:
    """Id of experiment ``name``, created if missing."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return str(existing.experiment_id)
    tracking_uri = str(client.tracking_uri)
    return str(client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name)))
