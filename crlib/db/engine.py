"""Engines and sessions for the results database, with errors that say what to check."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crlib.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker

    from crlib.config import Settings

log = logging.getLogger(__name__)


def resolve_database_url(settings: Settings) -> str:
    """The configured ``CRLIB_DATABASE_URL``, or the embedded server's URL (started if needed)."""
    from crlib.database_url import sqlalchemy_url

    if settings.database_url is not None:
        return sqlalchemy_url(settings.database_url.get_secret_value())
    from crlib.db.embedded import embedded_server_url

    return embedded_server_url(settings.data_root)


def make_engine(url: str, *, check: bool = True, pool_size: int = 5) -> Engine:
    """Create a SQLAlchemy engine and (optionally) prove it can connect.

    Parameters
    ----------
    url
        Database URL (``postgresql://`` or ``postgresql+psycopg2://``).
    check
        Open one connection now so a bad URL fails here with a clear message.
    pool_size
        Connection pool size.

    Raises
    ------
    DatabaseError
        Naming the URL (password masked) and what to check.
    """
    from sqlalchemy import create_engine, text

    from crlib.database_url import mask_url, sqlalchemy_url

    url = sqlalchemy_url(url)
    engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True, future=True)
    if check:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            engine.dispose()
            reason = (
                str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
            )
            raise DatabaseError(
                f"cannot connect to the results database at {mask_url(url)}: {reason}. "
                "Check that the server is running and reachable, the credentials and database name in "
                "CRLIB_DATABASE_URL, or unset it to use the embedded PostgreSQL."
            ) from None
    return engine


def session_factory(engine: Engine) -> sessionmaker:
    """A ``sessionmaker`` bound to ``engine`` (``expire_on_commit=False``)."""
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=engine, expire_on_commit=False, future=True)
