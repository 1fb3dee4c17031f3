"""Airflow test environment: a private AIRFLOW_HOME with a migrated sqlite metadata DB.

The environment is set when this module is imported, before anything imports Airflow, so the
DAG tests never touch a developer's ~/airflow.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"

_home = Path(tempfile.mkdtemp(prefix="crlib-airflow-"))
atexit.register(shutil.rmtree, _home, ignore_errors=True)  # the test session's own, gone with it
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_home),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
}
os.environ.update(AIRFLOW_ENV)
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the private Airflow metadata database once per session."""
    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, **AIRFLOW_ENV, "PATH": f"{airflow.parent}:{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return _home


@pytest.fixture(scope="session")
def airflow_env() -> dict[str, str]:
    """The Airflow environment variables the DAG tests run under."""
    return dict(AIRFLOW_ENV)


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))
