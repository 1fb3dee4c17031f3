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
        assert {"cr_rate_daily", "performance_monthly", "performance_total", "summary_changes"} <= tables
        views = set(inspect(engine).get_view_names())
        assert {"model_performance_monthly", "model_performance_total", "exposure_performance"} <= views
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
    names = sorted(p.name for p in (folder / "versions").glob("0*.py"))
    assert names[:2] == ["0001_initial_schema.py", "0002_statistics_views.py"]
    assert "0004_compact_histograms.py" in names


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


def test_0004_converts_recorded_histograms_and_downgrades(factory: Any, database_url: str) -> None:
    """Metrics recorded as integer[] (revision 0003) survive the upgrade to encoded bytea and back."""
    from sqlalchemy import text

    from crlib.db.engine import make_engine, session_factory
    from crlib.db.metric_store import load_metrics
    from crlib.db.migrate import downgrade, upgrade
    from crlib.db.stats import StatsFilter, model_performance, refresh_summaries

    every = StatsFilter(truth_statuses=())  # no truth was recorded: its status is unknown
    engine = make_engine(database_url)
    try:
        upgrade(engine, revision="0003")
        records = factory.visit_records(bins=40)
        metric = records["metrics"][0]
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO proposals (proposal_id, instrument) VALUES (10775, 'ACS/WFC');"
                    "INSERT INTO visits (visit, proposal_id, instrument) VALUES ('jbt122', 10775, 'ACS/WFC');"
                    "INSERT INTO models (name) VALUES ('deepcr-acs-wfc');"
                    "INSERT INTO model_versions (model_id, version) SELECT id, '1' FROM models"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO exposures (rootname, visit, proposal_id, instrument, detector, filter, "
                    "exptime_s, t_min_mjd, t_max_mjd, obs_date, target_name, ra_deg, dec_deg, field_type, "
                    "product_filename, product_uri) VALUES (:r, 'jbt122', 10775, 'ACS/WFC', 'WFC', 'F606W', "
                    "500, 55000.25, 55000.26, '2009-06-18', 'NGC-104', 6.0, -72.0, 'globular_cluster', "
                    "'f', 'u')"
                ),
                {"r": metric.rootname},
            )
            connection.execute(
                text(
                    "INSERT INTO exposure_metrics (rootname, model_version_id, tp, fp, fn, tn, tpr_at_fpr, "
                    "tpr_at_fpr_dilated, hist_cr, hist_noncr) SELECT :r, id, 1, 2, 3, 4, '{}', '{}', :c, :n "
                    "FROM model_versions"
                ),
                {"r": metric.rootname, "c": list(metric.hist_cr), "n": list(metric.hist_noncr)},
            )
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            (loaded,) = load_metrics(session)
            assert loaded.hist_cr == metric.hist_cr and loaded.hist_noncr == metric.hist_noncr
            assert loaded.hist_cr_dilated == ()
            assert (loaded.truth_status, loaded.split, loaded.border_px) == ("unknown", "unseen", 0)
            decoded = session.execute(text("SELECT hist_cr FROM exposure_performance")).scalar_one()
            assert decoded == list(metric.hist_cr)
            assert model_performance(session, by=("filter",)) == []  # unknown truth: not by default
            live = [r.as_dict() for r in model_performance(session, by=("filter",), where=every)]
            refresh_summaries(session)
            assert [r.as_dict() for r in model_performance(session, by=("filter",), where=every)] == live
            assert live[0]["n_exposures"] == 1 and live[0]["tp"] == 1
        downgrade(engine, revision="0003")
        with engine.connect() as connection:
            back = connection.execute(text("SELECT hist_cr, hist_noncr FROM exposure_metrics")).one()
            assert back.hist_cr == list(metric.hist_cr) and back.hist_noncr == list(metric.hist_noncr)
            # The materialised views of 0002 are back, computed from the converted rows.
            assert (
                connection.execute(text("SELECT n_exposures FROM model_performance_total")).scalar_one() == 1
            )
        upgrade(engine)
    finally:
        engine.dispose()


def test_0006_backfills_the_provenance_of_recorded_metrics(factory: Any, database_url: str) -> None:
    """A 0005 database with data: truth status from truth_results, split unseen, border 0; downgrade."""
    from sqlalchemy import text

    from crlib.db.engine import make_engine, session_factory
    from crlib.db.histcodec import encode_histogram
    from crlib.db.metric_store import load_metrics
    from crlib.db.migrate import downgrade, upgrade
    from crlib.db.stats import StatsFilter, model_performance, refresh_summaries

    records = factory.visit_records(bins=40)
    ok, suspect, none = records["metrics"]
    engine = make_engine(database_url)
    try:
        upgrade(engine, revision="0005")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO proposals (proposal_id, instrument) VALUES (10775, 'ACS/WFC');"
                    "INSERT INTO visits (visit, proposal_id, instrument) VALUES ('jbt122', 10775, 'ACS/WFC');"
                    "INSERT INTO models (name) VALUES ('deepcr-acs-wfc');"
                    "INSERT INTO model_versions (model_id, version) SELECT id, '1' FROM models"
                )
            )
            for observation in records["observations"]:
                connection.execute(
                    text(
                        "INSERT INTO exposures (rootname, visit, proposal_id, instrument, detector, "
                        "filter, exptime_s, t_min_mjd, t_max_mjd, obs_date, target_name, ra_deg, dec_deg, "
                        "field_type, product_filename, product_uri) VALUES (:r, 'jbt122', 10775, "
                        "'ACS/WFC', 'WFC', 'F606W', 500, 55000.25, 55000.26, '2009-06-18', 'NGC-104', "
                        "6.0, -72.0, 'globular_cluster', 'f', 'u')"
                    ),
                    {"r": observation.rootname},
                )
            truths = [
                (ok.rootname, "drizzle", "ok", []),
                (suspect.rootname, "drizzle", "suspect", ["alignment rms 0.6 px > 0.5"]),
                (suspect.rootname, "multiframe", "ok", []),  # the drizzle truth is what was scored
                (none.rootname, "drizzle", "failed", ["too few exposures"]),
            ]
            for rootname, method, status, reasons in truths:
                connection.execute(
                    text(
                        "INSERT INTO truth_results (rootname, method, status, reasons) "
                        "VALUES (:r, :m, :s, CAST(:why AS text[]))"
                    ),
                    {"r": rootname, "m": method, "s": status, "why": reasons},
                )
            for metric in (ok, suspect, none):
                connection.execute(
                    text(
                        "INSERT INTO exposure_metrics (rootname, model_version_id, tp, fp, fn, tn, "
                        "tpr_at_fpr, tpr_at_fpr_dilated, n_bins, hist_cr, hist_noncr) "
                        "SELECT :r, id, :tp, 2, 3, 4, '{}', '{}', 40, :c, :n FROM model_versions"
                    ),
                    {
                        "r": metric.rootname,
                        "tp": metric.tp,
                        "c": encode_histogram(metric.hist_cr),
                        "n": encode_histogram(metric.hist_noncr),
                    },
                )
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            loaded = {m.rootname: m for m in load_metrics(session)}
            assert {
                r: (m.truth_status, m.truth_method, m.split, m.border_px, m.dq_excluded)
                for r, m in loaded.items()
            } == {
                ok.rootname: ("ok", "drizzle", "unseen", 0, False),
                suspect.rootname: ("suspect", "drizzle", "unseen", 0, False),
                none.rootname: ("unknown", None, "unseen", 0, False),
            }
            assert loaded[suspect.rootname].truth_reasons == ("alignment rms 0.6 px > 0.5",)
            assert session.execute(text("SELECT count(*) FROM summary_changes")).scalar_one() > 0
            default = [r.as_dict() for r in model_performance(session, by=("filter",))]
            every = StatsFilter(truth_statuses=())
            live = [r.as_dict() for r in model_performance(session, by=("filter",), where=every)]
            refresh_summaries(session)
            assert [r.as_dict() for r in model_performance(session, by=("filter",))] == default
            assert [r.as_dict() for r in model_performance(session, by=("filter",), where=every)] == live
            assert default[0]["n_exposures"] == 1 and default[0]["tp"] == ok.tp
            assert live[0]["n_exposures"] == 3 and live[0]["truth"] == "ok+suspect+unknown"
            session.commit()
        downgrade(engine, revision="0005")
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("exposure_metrics")}
            assert not {"truth_status", "split", "border_px"} & columns
            assert connection.execute(text("SELECT count(*) FROM exposure_metrics")).scalar_one() == 3
        upgrade(engine)
        with session_factory(engine)() as session:
            assert {m.truth_status for m in load_metrics(session)} == {"ok", "suspect", "unknown"}
    finally:
        engine.dispose()
