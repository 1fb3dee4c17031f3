"""Atomic, idempotent writing helpers shared by the repository modules.

:func:`stage_transaction` gives every stage result its own transaction (or a savepoint inside
the caller's), and :func:`upsert` writes rows keyed by their primary (natural) key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crlib.db.orm import Base, Exposure, table_of
from crlib.db.validation import translated_errors
from crlib.errors import DatabaseError

MJD_EPOCH = dt.date(1858, 11, 17)


@contextmanager
def stage_transaction(session: Session, what: str) -> Iterator[None]:
    """Run the block atomically: its own committed transaction, or a savepoint in the caller's.

    Constraint errors inside become :class:`DatabaseError` naming the field, and nothing of the
    block stays written.
    """
    with translated_errors(what):
        if session.in_transaction():
            with session.begin_nested():
                yield
        else:
            with session.begin():
                yield


def mjd_to_date(mjd: float) -> dt.date:
    """Calendar date (UTC) of a Modified Julian Date."""
    return MJD_EPOCH + dt.timedelta(days=int(np.floor(mjd)))


def upsert(
    session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]], *, touch: str | None
) -> None:
    """``INSERT ... ON CONFLICT (primary key) DO UPDATE`` of ``rows`` into ``model``'s table."""
    if not rows:
        return
    table = table_of(model)
    keys = [c.name for c in table.primary_key.columns]
    statement = insert(table)
    updates: dict[str, Any] = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    if touch:
        updates[touch] = func.now()
    statement = (
        statement.on_conflict_do_update(index_elements=keys, set_=updates)
        if updates
        else statement.on_conflict_do_nothing(index_elements=keys)
    )
    session.execute(statement, list(rows))


def require_exposures(session: Session, rootnames: Iterable[str], *, what: str) -> None:
    wanted = sorted(set(rootnames))
    if not wanted:
        return
    known = set(session.scalars(select(Exposure.rootname).where(Exposure.rootname.in_(wanted))).all())
    missing = [name for name in wanted if name not in known]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatabaseError(
            f"cannot record {what}: exposure(s) {shown} are not in the results database; "
            "record their observations first (record_observations / the poll stage)"
        )
