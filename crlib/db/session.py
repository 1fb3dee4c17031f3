"""Opening the results database the way every command and task does."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from crlib.config import Settings

log = logging.getLogger(__name__)


def open_results_db(
    settings: Settings, *, upgrade: bool = False, pool_size: int = 5
) -> tuple[Engine, sessionmaker[Session]]:
    """Connect to the configured (or embedded) results database.

    Parameters
    ----------
    settings
        crlib settings: ``CRLIB_DATABASE_URL``, or the embedded server under the data root (this
        process then counts as one of its users until it exits; see :mod:`crlib.db.embedded`).
    upgrade
        Apply pending migrations first (``crlib db upgrade``); otherwise the schema must be current.
    pool_size
        Connection pool size.

    Returns
    -------
    tuple
        ``(engine, sessionmaker)``; sessions do not expire objects on commit.

    Raises
    ------
    DatabaseError
        When the server cannot be reached (naming the URL with the password masked and what to
        check), or the migrations fail.
    """
    from crlib.db.engine import make_engine, resolve_database_url, session_factory

    engine = make_engine(resolve_database_url(settings), pool_size=pool_size)
    if upgrade:
        from crlib.db.migrate import upgrade as apply_migrations

        apply_migrations(engine)
    return engine, session_factory(engine)
