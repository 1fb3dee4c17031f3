"""Alembic environment for the results database.

Run through :func:`crlib.db.migrate.upgrade` (which passes an open connection in
``config.attributes["connection"]``) or the ``alembic`` command with ``sql/alembic.ini``
(which reads the URL from ``CRLIB_DATABASE_URL``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from crlib.db.orm import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Apply migrations over the connection handed in, or one opened from CRLIB_DATABASE_URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from crlib.database_url import sqlalchemy_url

    url = config.get_main_option("sqlalchemy.url") or os.environ.get("CRLIB_DATABASE_URL")
    if not url:
        raise SystemExit("set CRLIB_DATABASE_URL to the results database to migrate")
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as opened:
        _run(opened)
    engine.dispose()


def run_offline() -> None:
    """Emit the migration SQL without a database (``alembic upgrade head --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql://",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
