"""The results database as the pipeline's tasks use it: one engine per block, disposed at its end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from crlib.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


@contextmanager
def results_database(
    settings: Settings, *, run_id: str | None = None, upgrade: bool = False
) -> Iterator[sessionmaker[Session]]:
    """One engine (pool of one) for a task's database work; disposed when the block ends.

    Parameters
    ----------
    settings
        Settings naming the results database.
    run_id
        When given, the run's heartbeat is touched first: every stage is a sign of life, and a
        run without one for ``CRLIB_RUN_LEASE_MINUTES`` is recorded as abandoned by the next run.
    upgrade
        Apply pending schema migrations first.

    Yields
    ------
    sessionmaker
        The session factory of the engine.
    """
    from crlib.db.runs import touch_run
    from crlib.db.session import open_results_db

    engine, sessions = open_results_db(settings, upgrade=upgrade, pool_size=1)
    try:
        if run_id is not None:
            with sessions() as session:
                touch_run(session, run_id=run_id)
        yield sessions
    finally:
        engine.dispose()


@contextmanager
def results_session(
    settings: Settings, *, run_id: str | None = None, upgrade: bool = False
) -> Iterator[Session]:
    """One session of :func:`results_database` (same parameters)."""
    with results_database(settings, run_id=run_id, upgrade=upgrade) as sessions, sessions() as opened:
        yield opened
