"""Database roles: ``crlib_writer`` for the service and the read-only ``crlib_reader`` for statistics users.

Roles are cluster-wide and creating them needs the ``CREATEROLE`` privilege, which the service's
own login usually lacks, so they are set up by an administrator with ``crlib db roles`` rather
than by a migration. Running it again is harmless and also grants on tables added by later
migrations.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crlib.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

WRITER_ROLE = "crlib_writer"
READER_ROLE = "crlib_reader"


def _ensure_role(connection: Connection, role: str, password: str | None) -> None:
    from sqlalchemy import text

    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if exists is None:
        connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        log.info("created role %s", role)
    if password is not None:
        quoted = connection.execute(text("SELECT quote_literal(:p)"), {"p": password}).scalar_one()
        connection.execute(text(f'ALTER ROLE "{role}" LOGIN PASSWORD {quoted}'))


def ensure_roles(
    engine: Engine, *, reader_password: str | None = None, writer_password: str | None = None
) -> None:
    """Create the roles if missing and grant them their privileges on this database.

    Parameters
    ----------
    engine
        Engine connected as a user with ``CREATEROLE`` that owns the schema (after
        ``crlib db upgrade``).
    reader_password, writer_password
        When given, the role may log in with this password; otherwise it stays a group role that
        real logins are granted (``GRANT crlib_reader TO alice``).

    Raises
    ------
    DatabaseError
        When the connected user may not create roles or grant.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from crlib.database_url import mask_url

    try:
        with engine.begin() as connection:
            database = connection.execute(text("SELECT current_database()")).scalar_one()
            _ensure_role(connection, WRITER_ROLE, writer_password)
            _ensure_role(connection, READER_ROLE, reader_password)
            for role in (WRITER_ROLE, READER_ROLE):
                connection.execute(text(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{role}"'))
                connection.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
            connection.execute(
                text(
                    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public "
                    f'FROM "{READER_ROLE}"'
                )
            )
            connection.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{READER_ROLE}"'))
            connection.execute(
                text(
                    f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{WRITER_ROLE}"'
                )
            )
            connection.execute(
                text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{WRITER_ROLE}"')
            )
            connection.execute(
                text(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{READER_ROLE}"')
            )
            connection.execute(
                text(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                    f'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{WRITER_ROLE}"'
                )
            )
            # The summaries are plain tables (revision 0004): the writer refreshes them with the
            # privileges above. Databases still at 0002/0003 have materialised views, which only
            # their owner may refresh: give those to the writer group.
            for view in connection.execute(
                text("SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'")
            ).scalars():
                connection.execute(text(f'ALTER MATERIALIZED VIEW "{view}" OWNER TO "{WRITER_ROLE}"'))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"could not set up roles {WRITER_ROLE}/{READER_ROLE} on "
            f"{mask_url(engine.url.render_as_string())}: "
            f"{reason}. Run `crlib db roles` as a user with CREATEROLE that owns the schema."
        ) from None
    log.info("roles %s and %s ready on database %s", WRITER_ROLE, READER_ROLE, database)
