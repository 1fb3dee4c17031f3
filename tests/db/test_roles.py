"""Roles: the read-only crlib_reader can select everything and write nothing; crlib_writer can record."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from crlib.db.roles import READER_ROLE, WRITER_ROLE, ensure_roles


def _login(database_url: str, role: str) -> Any:
    return create_engine(make_url(database_url).set(username=role, password="pw-for-tests"))


def test_reader_can_select_and_cannot_write(
    factory: Any, engine: Any, sessions: Any, database_url: str
) -> None:
    from crlib.db.stats import refresh_summaries

    with sessions() as session:
        factory.record_visit(session, factory.visit_records())
    ensure_roles(engine, reader_password="pw-for-tests", writer_password="pw-for-tests")
    ensure_roles(engine)  # running it again is harmless
    reader = _login(database_url, READER_ROLE)
    try:
        with reader.connect() as connection:
            assert connection.execute(text("SELECT current_user")).scalar_one() == READER_ROLE
            assert connection.execute(text("SELECT count(*) FROM exposures")).scalar_one() == 3
            assert connection.execute(text("SELECT count(*) FROM cr_rate_daily")).scalar_one() >= 0
            assert connection.execute(text("SELECT count(*) FROM exposure_performance")).scalar_one() == 3
            assert connection.execute(text("SELECT count(*) FROM summary_changes")).scalar_one() > 0
            decoded = connection.execute(text("SELECT hist_cr FROM model_performance_total")).all()
            assert decoded == []  # nothing refreshed yet; the view decodes with hist_decode
        for statement in (
            "INSERT INTO filters (name) VALUES ('F999W')",
            "UPDATE exposures SET exptime_s = 1",
            "DELETE FROM exposure_metrics",
            "DELETE FROM cr_rate_daily",
            "INSERT INTO summary_changes (month, filter) VALUES ('2020-01-01', 'F606W')",
        ):
            with (
                reader.connect() as connection,
                pytest.raises(ProgrammingError, match=r"permission denied|must be"),
            ):
                connection.execute(text(statement))
    finally:
        reader.dispose()
    writer = _login(database_url, WRITER_ROLE)
    try:
        from crlib.db.engine import session_factory

        with session_factory(writer)() as session:
            factory.record_visit(session, factory.visit_records("jc4a01", seed=3))
            refresh_summaries(session)
            assert session.execute(text("SELECT count(*) FROM exposures")).scalar_one() == 6
    finally:
        writer.dispose()
    reader = _login(database_url, READER_ROLE)
    try:
        from crlib.db.engine import session_factory
        from crlib.db.stats import cr_rate, model_performance

        with session_factory(reader)() as session:
            assert cr_rate(session, by=("filter",))[0]["n_chips"] == 12
            assert model_performance(session)[0].n_exposures == 6
            row = session.execute(text("SELECT n_bins, hist_cr FROM model_performance_total")).one()
            assert len(row.hist_cr) == row.n_bins
    finally:
        reader.dispose()
