"""The embedded PostgreSQL server used when no ``CRLIB_DATABASE_URL`` is configured.

A real PostgreSQL 16 from the ``pgserver`` wheel, its data directory under the data root, reached
over a Unix socket. It keeps running after the command that started it, so later commands (and
Airflow tasks) reuse it; :func:`stop_embedded_server` stops it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crlib.errors import DatabaseError

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "crlib"


def embedded_server_url(data_root: Path, *, database: str = DEFAULT_DATABASE) -> str:
    """Start (or reuse) the embedded server under ``data_root/postgres`` and return its URL.

    Parameters
    ----------
    data_root
        crlib's data root; the cluster lives in ``data_root/postgres``.
    database
        Database to create if missing and return a URL for.

    Returns
    -------
    str
        A ``postgresql+psycopg2://`` URL with ``host=<socket dir>``.

    Raises
    ------
    DatabaseError
        If the server cannot be initialised or started; names the log file to read.
    """
    import pgserver

    from crlib.db.urls import sqlalchemy_url

    pgdata = (data_root / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata} ({exc}); see {pgdata / 'log'} "
            "or set CRLIB_DATABASE_URL to a running server"
        ) from exc
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        log.info("creating database %s in the embedded server at %s", database, pgdata)
        server.psql(f'CREATE DATABASE "{database}";')
    return sqlalchemy_url(server.get_uri(database))


def stop_embedded_server(data_root: Path) -> bool:
    """Stop the embedded server under ``data_root`` if it is running; return whether it was."""
    pgdata = (data_root / "postgres").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    import pgserver

    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    server.cleanup()
    return True
