"""Apply the results-database migrations programmatically (``crlib db upgrade``).

The Alembic scripts ship inside the package (:mod:`crlib.db.migrations`) so an installed crlib
can upgrade a database without the source checkout; ``sql/alembic.ini`` points the ``alembic``
command at the same directory for developers.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from crlib.errors import DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

#: Serialises concurrent upgrades (several Airflow tasks starting at once) on one database.
_UPGRADE_LOCK_KEY = 0x6372_6C69_6200


def migrations_dir() -> Path:
    """Directory of the Alembic environment (``env.py``, ``versions/``) inside the package."""
    return Path(str(files("crlib.db") / "migrations"))


def alembic_config() -> Config:
    """An Alembic :class:`~alembic.config.Config` whose ``script_location`` is the packaged migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str:
    """The newest migration revision id shipped with this crlib."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise DatabaseError(f"no migrations found in {migrations_dir()}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` for an empty (never migrated) database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, *, revision: str = "head") -> str:
    """Upgrade the database to ``revision`` (default: the newest); safe to call concurrently.

    Parameters
    ----------
    engine
        Engine of the results database; its user must be allowed to create tables.
    revision
        Target revision id, or ``head``.

    Returns
    -------
    str
        The revision the database is at afterwards.

    Raises
    ------
    DatabaseError
        When a migration fails (naming the database URL, password masked, and the revision).
    """
    return _migrate(
        engine,
        "upgrade",
        revision,
        advice=". Check that the user may create tables, or run `crlib db upgrade` as the database owner.",
    )


def downgrade(engine: Engine, *, revision: str) -> str:
    """Migrate the database back to ``revision`` (for rolling back a deployment; data of newer
    revisions that the old schema cannot hold, such as dilated histograms, is dropped).

    Parameters
    ----------
    engine
        Engine of the results database (its owner).
    revision
        Target revision id (e.g. ``0003``).

    Returns
    -------
    str
        The revision the database is at afterwards.

    Raises
    ------
    DatabaseError
        When a migration fails.
    """
    return _migrate(engine, "downgrade", revision, advice="")


def _migrate(
    engine: Engine, direction: Literal["upgrade", "downgrade"], revision: str, *, advice: str
) -> str:
    """Run Alembic's ``direction`` to ``revision`` under the migration advisory lock."""
    from alembic import command
    from sqlalchemy import text

    from crlib.database_url import mask_url

    config = alembic_config()
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            config.attributes["connection"] = connection
            getattr(command, direction)(config, revision)
    except DatabaseError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise DatabaseError(
            f"could not {direction} the results database at {mask_url(engine.url.render_as_string())} "
            f"to {revision}: {reason}{advice}"
        ) from exc
    reached = current_revision(engine)
    log.info("results database at revision %s", reached)
    return reached or ""
