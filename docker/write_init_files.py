"""Write the files the ``crlib-init`` compose service feeds to Airflow, from the environment.

Run inside the image by ``docker/crlib-init.sh``; never prints a secret (only file names and
connection ids). Two commands:

``connections FILE``
    An ``airflow connections import`` JSON file with the connections crlib's tasks read
    (``plugins/crlib_airflow/connections.py``): ``crlib_db`` (the results database, as the
    least-privileged ``crlib_writer`` login), ``crlib_mlflow`` (the MLflow server) and ``mast``
    (base URL, and the token when one is set).
``api-users FILE``
    The SimpleAuthManager password file (``{"admin": "<password>"}``), so the api-server never
    generates a password and prints it to its log.

Environment: ``CRLIB_WRITER_PASSWORD``, ``AIRFLOW_ADMIN_PASSWORD`` (required); ``CRLIB_DB_HOST``
(``postgres``), ``CRLIB_DB_PORT`` (5432), ``CRLIB_DB_NAME`` (``crlib``), ``CRLIB_DB_USER``
(``crlib_writer``), ``CRLIB_MLFLOW_HOST`` (``mlflow``), ``CRLIB_MLFLOW_PORT`` (5000),
``CRLIB_MAST_SERVER`` (``https://mast.stsci.edu``), ``CRLIB_MAST_TOKEN`` (optional),
``AIRFLOW_ADMIN_USER`` (``admin``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class InitError(RuntimeError):
    """A required setting is missing or malformed (the message never contains its value)."""


def _required(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise InitError(f"{name} is not set (see docker/env.example)")
    return value


def connections(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The connections to import, keyed by connection id.

    Parameters
    ----------
    env
        Environment variables (``os.environ`` in the container).

    Returns
    -------
    dict
        ``{conn_id: {"conn_type": ..., "host": ..., ...}}`` in ``airflow connections import`` form.

    Raises
    ------
    InitError
        When the writer password is missing or ``CRLIB_MAST_SERVER`` is not an http(s) URL.
    """
    mast = urlsplit(env.get("CRLIB_MAST_SERVER") or "https://mast.stsci.edu")
    if mast.scheme not in ("http", "https") or not mast.hostname:
        raise InitError("CRLIB_MAST_SERVER must be an http(s) URL such as https://mast.stsci.edu")
    mast_conn: dict[str, Any] = {"conn_type": mast.scheme, "host": mast.hostname}
    if mast.port:
        mast_conn["port"] = mast.port
    if env.get("CRLIB_MAST_TOKEN"):
        mast_conn["password"] = env["CRLIB_MAST_TOKEN"]
    return {
        "crlib_db": {
            "conn_type": "postgres",
            "host": env.get("CRLIB_DB_HOST") or "postgres",
            "port": int(env.get("CRLIB_DB_PORT") or 5432),
            "schema": env.get("CRLIB_DB_NAME") or "crlib",
            "login": env.get("CRLIB_DB_USER") or "crlib_writer",
            "password": _required(env, "CRLIB_WRITER_PASSWORD"),
        },
        "crlib_mlflow": {
            "conn_type": "http",
            "host": env.get("CRLIB_MLFLOW_HOST") or "mlflow",
            "port": int(env.get("CRLIB_MLFLOW_PORT") or 5000),
        },
        "mast": mast_conn,
    }


def api_users(env: dict[str, str]) -> dict[str, str]:
    """The SimpleAuthManager password file's content: ``{user: password}``.

    Raises
    ------
    InitError
        When ``AIRFLOW_ADMIN_PASSWORD`` is missing.
    """
    return {env.get("AIRFLOW_ADMIN_USER") or "admin": _required(env, "AIRFLOW_ADMIN_PASSWORD")}


def write_private_json(path: Path, content: object) -> None:
    """Write ``content`` as JSON to ``path``, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(content, handle)
        handle.write("\n")
    os.chmod(path, 0o600)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``write_init_files.py {connections|api-users} FILE``."""
    args = sys.argv[1:] if argv is None else argv
    builders = {"connections": connections, "api-users": api_users}
    if len(args) != 2 or args[0] not in builders:
        sys.stderr.write("usage: write_init_files.py {connections|api-users} FILE\n")
        return 2
    try:
        content = builders[args[0]](dict(os.environ))
    except InitError as exc:
        sys.stderr.write(f"crlib-init: {exc}\n")
        return 2
    write_private_json(Path(args[1]), content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
