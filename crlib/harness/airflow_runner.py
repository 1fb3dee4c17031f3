"""Run crlib's DAGs through the Airflow command line (a subprocess: crlib never imports Airflow).

Used by ``crlib demo`` and ``crlib airflow ...``: prepares a private ``AIRFLOW_HOME`` under the data
root (metadata database, the repository's ``dags/`` and ``plugins/``), migrates it, creates the
inference pool, and runs ``airflow dags test`` so a whole DAG run happens in one process.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from crlib.config import Settings
from crlib.errors import ConfigError, CrlibError

log = logging.getLogger(__name__)

#: Repository root (the DAG and plugin folders live beside the package in a checkout).
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class AirflowEnvironment:
    """Where Airflow keeps its state for crlib, and the environment to run it with."""

    home: Path
    dags_folder: Path
    plugins_folder: Path
    env: dict[str, str]

    def airflow_executable(self) -> str:
        """The ``airflow`` script of the running interpreter's environment."""
        candidate = Path(sys.executable).with_name("airflow")
        if candidate.exists():
            return str(candidate)
        found = shutil.which("airflow")
        if found is None:
            raise ConfigError("the 'airflow' command is not installed in this environment (run `make setup`)")
        return found


def airflow_environment(
    settings: Settings, *, dags_folder: Path | None = None, metadata_url: str | None = None
) -> AirflowEnvironment:
    """Build the Airflow environment for ``settings``.

    Parameters
    ----------
    settings
        crlib settings; ``AIRFLOW_HOME`` is ``<data_root>/airflow``, and every setting is passed on
        as its ``CRLIB_*`` variable (unset ones removed) so tasks see exactly this configuration.
    dags_folder
        Folder with the crlib DAG files (default: the checkout's ``dags/``).
    metadata_url
        Airflow metadata database URL (default: a sqlite file in ``AIRFLOW_HOME``).
    """
    home = (settings.data_root / "airflow").resolve()
    home.mkdir(parents=True, exist_ok=True)
    dags = (dags_folder or REPO_ROOT / "dags").resolve()
    plugins = (REPO_ROOT / "plugins").resolve()
    if not dags.is_dir():
        raise ConfigError(f"DAG folder {dags} not found; run from a crlib checkout")
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH", "")) if p),
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", ""))),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    passed = settings_environment(settings)
    for name in type(settings).model_fields:
        env.pop(f"CRLIB_{name.upper()}", None)  # an inherited value must not stand in for an unset one
    env.update(passed)
    return AirflowEnvironment(home=home, dags_folder=dags, plugins_folder=plugins, env=env)


def settings_environment(settings: Settings) -> dict[str, str]:
    """``CRLIB_*`` variables that rebuild ``settings`` in another process (secrets included).

    Parameters
    ----------
    settings
        The settings to pass on.

    Returns
    -------
    dict
        One variable per setting that is not ``None``; paths are absolute.
    """
    from pydantic import SecretStr

    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = value.resolve()
        env[f"CRLIB_{name.upper()}"] = str(value)
    return env


def _run(
    environment: AirflowEnvironment, *args: str, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    command = [environment.airflow_executable(), *args]
    log.info("airflow %s", " ".join(args))
    result = subprocess.run(command, env=environment.env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise CrlibError(f"`airflow {' '.join(args)}` failed (exit {result.returncode}):\n{tail}")
    return result


def inference_slots(settings: Settings) -> int:
    """Size of the ``crlib_inference`` pool for this machine.

    One slot per GPU when inference runs on CUDA; on CPU, as many concurrent inferences as the
    cores hold at ``threads`` torch threads each (``threads=0`` uses every core: one slot).
    """
    if settings.device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    cores = os.cpu_count() or 1
    return max(1, cores // settings.torch_threads())


#: Default size of the ``crlib_mast`` pool: concurrent MAST queries/downloads cluster-wide.
MAST_POOL_SLOTS = 4


def prepare_airflow(
    environment: AirflowEnvironment, *, inference_slots: int = 2, mast_slots: int = MAST_POOL_SLOTS
) -> None:
    """Migrate the metadata database and create the ``crlib_inference`` and ``crlib_mast`` pools.

    Idempotent.

    Parameters
    ----------
    environment
        From :func:`airflow_environment`.
    inference_slots
        ``crlib_inference`` pool size (see :func:`inference_slots`).
    mast_slots
        ``crlib_mast`` pool size: archive tasks (poll, fetch) running at once.
    """
    _run(environment, "db", "migrate", timeout=900)
    _run(
        environment,
        "pools",
        "set",
        "crlib_inference",
        str(inference_slots),
        "Concurrent deepCR inference tasks (size to cores/GPUs)",
    )
    _run(
        environment,
        "pools",
        "set",
        "crlib_mast",
        str(mast_slots),
        "Concurrent MAST queries and downloads (crlib archive tasks)",
    )


def run_dag_test(environment: AirflowEnvironment, dag_id: str, *, conf: str | None = None) -> str:
    """Run one whole DAG run in-process with ``airflow dags test``; returns Airflow's output.

    Raises
    ------
    CrlibError
        If the run fails; the message carries the end of Airflow's output.
    """
    args = ["dags", "test", dag_id]
    if conf:
        args += ["--conf", conf]
    result = _run(environment, *args)
    return result.stdout + result.stderr
