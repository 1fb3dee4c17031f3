"""Schema migrations: applied programmatically from the package, idempotent, matching the ORM."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect


def test_upgrade_creates_schema_and_is_idempotent(database_url: str) -> None:
    from crlib.db.engine import make_engine
    from crlib.db.migrate import current_revision, head_revision, upgrade

    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {
            "exposures",
            "exposure_metrics",
            "cr_statistics",
            "archive_watermarks",
            "pipeline_runs",
        } <= tables
        views = set(inspect(engine).get_materialized_view_names())
        assert {"cr_rate_daily", "model_performance_monthly", "model_performance_total"} <= views
    finally:
        engine.dispose()


def test_migrations_match_the_orm(engine: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from crlib.db.orm import Base

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrations_ship_inside_the_package() -> None:
    from crlib.db.migrate import migrations_dir

    folder = migrations_dir()
    assert folder.is_relative_to(__import__("crlib").__path__[0])
    assert (folder / "env.py").is_file()
    assert sorted(p.name for p in (folder / "versions").glob("0*.py"))[:2] == [
        "0001_initial_schema.py",
        "0002_statistics_views.py",
    ]


def test_filters_are_seeded(sessions: Any) -> None:
    from sqlalchemy import text

    with sessions() as session:
        names = set(session.execute(text("SELECT name FROM filters")).scalars())
    assert {"F435W", "F606W", "F814W", "F850LP"} <= names


def test_open_results_db_upgrades_when_asked(database_url: str, monkeypatch: Any) -> None:
    from crlib.config import load_settings
    from crlib.db.migrate import current_revision, head_revision
    from crlib.db.session import open_results_db

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    engine, sessions = open_results_db(load_settings(), upgrade=True)
    try:
        assert current_revision(engine) == head_revision()
        with sessions() as session:
            assert session.get_bind() is engine
    finally:
        engine.dispose()
