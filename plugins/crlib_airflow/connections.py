"""Build crlib's settings inside a task from Airflow Connections.

Connections (any Airflow secrets backend, or ``AIRFLOW_CONN_<ID>`` environment variables):

- ``crlib_db``: the results database (``postgres://user:pass@host:5432/crlib``);
- ``crlib_mlflow``: the MLflow tracking server (``http://host:5000``);
- ``mast``: MAST base URL in ``host`` (with schema), the token in ``password``.

A missing connection falls back to the ``CRLIB_*`` environment (and from there to the embedded
defaults). Values are never logged.
"""

from __future__ import annotations

from typing import Any


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception:  # not defined in any backend: fall back to the environment
        return None


def task_settings(**overrides: Any) -> Any:
    """crlib ``Settings`` for the running task: Connections first, then ``CRLIB_*``, then defaults."""
    from crlib.config import load_settings

    values: dict[str, Any] = {}
    db = _connection("crlib_db")
    if db is not None and db.host:
        values["database_url"] = db.get_uri()
    tracking = _connection("crlib_mlflow")
    if tracking is not None and tracking.host:
        scheme = tracking.conn_type if tracking.conn_type in ("http", "https") else "http"
        port = f":{tracking.port}" if tracking.port else ""
        values["mlflow_tracking_uri"] = f"{scheme}://{tracking.host}{port}"
    mast = _connection("mast")
    if mast is not None:
        if mast.host:
            scheme = mast.conn_type if mast.conn_type in ("http", "https") else "https"
            port = f":{mast.port}" if mast.port else ""
            values["mast_server"] = f"{scheme}://{mast.host}{port}"
        if mast.password:
            values["mast_token"] = mast.password
    values.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(**values)
