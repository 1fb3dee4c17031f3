"""``crlib bench db``: statistics latency over a generated archive and bulk-recording throughput.

The benchmark works in its own scratch database (created on the configured server and dropped
afterwards), fills it server-side with ``generate_series`` (exposures, two chips of CR
statistics each, one metrics row each with full-length score histograms), records a batch of
metrics through :func:`crlib.db.repo.record_metrics`, refreshes the summaries and times every
``crlib stats`` query. References measured in the same run: the same statistics computed
straight from the base tables, and metrics inserted row by row through the ORM.
"""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

STATS_TARGET_S = 1.0
RECORD_TARGET_ROWS_PER_S = 5000.0
BENCH_FILTERS = ("F435W", "F475W", "F555W", "F606W", "F775W", "F814W", "F850LP")


@dataclass
class BenchReport:
    """Measurements of one benchmark run (seconds unless named otherwise)."""

    exposures: int
    bins: int
    timings: dict[str, float] = field(default_factory=dict)
    queries: dict[str, float] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)
    record_rows_per_s: float = 0.0
    reference_rows_per_s: float = 0.0
    table_sizes: dict[str, str] = field(default_factory=dict)

    def passed(self) -> bool:
        """Whether every query met :data:`STATS_TARGET_S` and recording met its rate target."""
        return (
            all(v <= STATS_TARGET_S for v in self.queries.values())
            and self.record_rows_per_s >= RECORD_TARGET_ROWS_PER_S
        )


def generate_archive(session: Session, *, exposures: int, bins: int, model_version_id: int) -> None:
    """Fill an empty, migrated database with ``exposures`` synthetic exposures, server-side.

    Four exposures per visit, 200 exposures per proposal, 2002-2024, seven filters, three field
    types; two chips of CR statistics per exposure (about 1.2 CR cm^-2 s^-1) and one metrics row
    per exposure with ``bins``-bin histograms drawn from 64 templates.
    """
    n_visits = max(1, (exposures + 3) // 4)
    n_proposals = max(1, exposures // 200)
    params = {"n": exposures, "nv": n_visits, "np": n_proposals, "bins": bins, "mv": model_version_id}
    filters = "ARRAY[" + ", ".join(f"'{f}'" for f in BENCH_FILTERS) + "]"
    statements = [
        "INSERT INTO proposals (proposal_id, instrument) "
        "SELECT 10000 + p, 'ACS/WFC' FROM generate_series(0, :np - 1) AS p",
        "INSERT INTO visits (visit, proposal_id, instrument) "
        "SELECT 'j' || lpad(to_hex(v), 5, '0'), 10000 + v % :np, 'ACS/WFC' "
        "FROM generate_series(0, :nv - 1) AS v",
        f"""
        INSERT INTO exposures (rootname, visit, proposal_id, instrument, detector, filter, exptime_s,
                               t_min_mjd, t_max_mjd, obs_date, release_mjd, target_name, ra_deg, dec_deg,
                               field_type, product_filename, product_uri)
        SELECT vis || lpad(to_hex(g % 4), 2, '0') || 'q', vis, 10000 + v % :np, 'ACS/WFC', 'WFC',
               ({filters})[1 + (v * 7919) % {len(BENCH_FILTERS)}], exptime, mjd, mjd + exptime / 86400.0,
               DATE '1858-11-17' + floor(mjd)::int, mjd + 365, 'BENCH',
               (v % 360)::float8, ((v % 180) - 90)::float8,
               (ARRAY['globular_cluster', 'extragalactic', 'resolved_galaxy'])[1 + (10000 + v % :np) % 3],
               vis || lpad(to_hex(g % 4), 2, '0') || 'q_flc.fits', 'mast:HST/product/bench_flc.fits'
        FROM (SELECT g, g / 4 AS v, 'j' || lpad(to_hex(g / 4), 5, '0') AS vis,
                     (ARRAY[30, 339, 500, 1200, 2000])[1 + (g / 4) % 5]::float8 AS exptime,
                     52334 + (g / 4) * 8000.0 / :nv + (g % 4) * 0.03 AS mjd
              FROM generate_series(0, :n - 1) AS g) AS s
        """,
        """
        INSERT INTO cr_statistics (rootname, chip, cr_pixels, cr_events, exptime_s, rate_per_cm2_s)
        SELECT rootname, chip, events * 8, events, exptime_s, events / (18.87 * exptime_s)
        FROM (SELECT e.rootname, c.chip, e.exptime_s,
                     round(22.6 * e.exptime_s * (0.8 + 0.4 * random()))::bigint AS events
              FROM exposures e CROSS JOIN (VALUES (1), (2)) AS c(chip)) AS s
        """,
        """
        CREATE TEMPORARY TABLE hist_templates ON COMMIT DROP AS
        SELECT t AS id,
               array_agg(floor(random() * 60 * b / :bins)::int ORDER BY b) AS cr,
               array_agg(floor(random() * 20000 * exp(-8.0 * b / :bins))::int ORDER BY b) AS noncr
        FROM generate_series(0, 63) AS t, generate_series(1, :bins) AS b
        GROUP BY t
        """,
        """
        INSERT INTO exposure_metrics (rootname, model_version_id, tp, fp, fn, tn, tpr_at_fpr,
                                      tpr_at_fpr_dilated, hist_cr, hist_noncr)
        SELECT e.rootname, :mv, 9000, 300, 1000, 16000000,
               '{"0.0005": 0.85, "0.005": 0.97}'::jsonb, '{"0.0005": 0.93, "0.005": 0.99}'::jsonb,
               h.cr, h.noncr
        FROM exposures e JOIN hist_templates h ON h.id = (hashtext(e.rootname) & 63)
        """,
    ]
    with session.begin():
        for statement in statements:
            session.execute(text(statement), params)


def _synthetic_metrics(rootnames: list[str], *, bins: int, model_version: str, seed: int = 5) -> list[Any]:
    from crlib.records import ExposureMetrics

    rng = np.random.default_rng(seed)
    shape = np.linspace(0, 1, bins)
    out = []
    for rootname in rootnames:
        hist_cr = rng.poisson(60 * shape)
        hist_noncr = rng.poisson(20000 * np.exp(-8 * shape))
        out.append(
            ExposureMetrics(
                rootname=rootname,
                model_name="deepcr-acs-wfc",
                model_version=model_version,
                tp=int(hist_cr[bins // 2 :].sum()),
                fp=int(hist_noncr[bins // 2 :].sum()),
                fn=int(hist_cr[: bins // 2].sum()),
                tn=int(hist_noncr[: bins // 2].sum()),
                tpr_at_fpr={"0.0005": 0.8, "0.005": 0.95},
                tpr_at_fpr_dilated={"0.0005": 0.9, "0.005": 0.98},
                hist_cr=tuple(int(v) for v in hist_cr),
                hist_noncr=tuple(int(v) for v in hist_noncr),
            )
        )
    return out


def _timed(function: Callable[[], Any], *, repeat: int) -> float:
    """Median wall time of ``repeat`` calls (after one warm-up call)."""
    function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _stats_queries(sessions: sessionmaker[Session]) -> dict[str, Callable[[], Any]]:
    import datetime as dt

    from crlib.db.stats import StatsFilter, cr_rate, model_performance, pipeline_status

    def run(fn: Callable[..., Any], **kwargs: Any) -> Callable[[], Any]:
        def call() -> Any:
            with sessions() as session:
                return fn(session, **kwargs)

        return call

    decade = StatsFilter(since=dt.date(2005, 1, 1), until=dt.date(2014, 12, 31), filters=("F606W", "F814W"))
    return {
        "cr_rate by month": run(cr_rate, by=("month",)),
        "cr_rate by filter": run(cr_rate, by=("filter",)),
        "cr_rate by chip": run(cr_rate, by=("chip",)),
        "cr_rate by exptime": run(cr_rate, by=("exptime",)),
        "cr_rate by month x filter (2 filters, 10 years)": run(cr_rate, by=("month", "filter"), where=decade),
        "cr_rate by month, one proposal": run(cr_rate, by=("month",), where=StatsFilter(proposal_id=10007)),
        "performance model x field type x filter": run(model_performance),
        "performance by month (2 filters, 10 years)": run(
            model_performance, by=("model", "month"), where=decade
        ),
        "performance, one field type, one proposal": run(
            model_performance, where=StatsFilter(proposal_id=10007, field_types=("extragalactic",))
        ),
        "pipeline status per night": run(pipeline_status),
    }


def run_db_benchmark(
    engine: Engine,
    *,
    exposures: int = 1_000_000,
    bins: int | None = None,
    record_rows: int = 5000,
    repeat: int = 3,
) -> BenchReport:
    """Run the benchmark in a scratch database on ``engine``'s server (dropped afterwards).

    Parameters
    ----------
    engine
        Engine whose user may create databases.
    exposures
        Number of synthetic exposures to generate.
    bins
        Histogram bins per metrics row (default: :data:`crlib.metrics.histograms.N_SCORE_BINS`).
    record_rows
        Metrics rows recorded through :func:`~crlib.db.repo.record_metrics` for the throughput figure.
    repeat
        Timed repetitions per query (median reported, after a warm-up).
    """
    from sqlalchemy import create_engine

    from crlib.db.engine import session_factory
    from crlib.db.migrate import upgrade
    from crlib.db.model_registry import record_model_version
    from crlib.db.orm import ExposureMetricsRow
    from crlib.db.repo import record_metrics
    from crlib.db.stats import cr_rate, model_performance, refresh_summaries

    if bins is None:
        from crlib.metrics.histograms import N_SCORE_BINS

        bins = N_SCORE_BINS
    report = BenchReport(exposures=exposures, bins=bins)
    name = f"crlib_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    bench_engine = create_engine(make_url(engine.url).set(database=name), pool_size=2)
    try:
        sessions = session_factory(bench_engine)
        start = time.perf_counter()
        upgrade(bench_engine)
        report.timings["migrate"] = time.perf_counter() - start
        with sessions() as session:
            version_id = record_model_version(
                session, model_name="deepcr-acs-wfc", version="1", source="deepcr_package"
            )
        start = time.perf_counter()
        with sessions() as session:
            generate_archive(session, exposures=exposures, bins=bins, model_version_id=version_id)
        report.timings["generate"] = time.perf_counter() - start
        with bench_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))

        with sessions() as session:
            rootnames = list(
                session.scalars(
                    text("SELECT rootname FROM exposures ORDER BY rootname LIMIT :n"), {"n": record_rows}
                )
            )
        batch = _synthetic_metrics(rootnames, bins=bins, model_version="2")
        start = time.perf_counter()
        with sessions() as session:
            record_metrics(session, batch)
        report.record_rows_per_s = len(batch) / (time.perf_counter() - start)
        reference = _synthetic_metrics(rootnames[:300], bins=bins, model_version="3")
        with sessions() as session:
            mv3 = record_model_version(session, model_name="deepcr-acs-wfc", version="3", source="mlflow")
        start = time.perf_counter()
        with sessions() as session:  # reference: one ORM object and INSERT per row
            for metric in reference:
                with session.begin():
                    session.add(
                        ExposureMetricsRow(
                            rootname=metric.rootname,
                            model_version_id=mv3,
                            tp=metric.tp,
                            fp=metric.fp,
                            fn=metric.fn,
                            tn=metric.tn,
                            tpr_at_fpr=metric.tpr_at_fpr,
                            tpr_at_fpr_dilated=metric.tpr_at_fpr_dilated,
                            hist_cr=list(metric.hist_cr),
                            hist_noncr=list(metric.hist_noncr),
                        )
                    )
        report.reference_rows_per_s = len(reference) / (time.perf_counter() - start)

        with sessions() as session:
            for view, seconds in refresh_summaries(session, concurrently=False).items():
                report.timings[f"refresh {view}"] = seconds
        for label, query in _stats_queries(sessions).items():
            report.queries[label] = _timed(query, repeat=repeat)
            log.info("%s: %.3f s", label, report.queries[label])

        def direct_cr_rate() -> Any:
            with sessions() as session:
                return session.execute(
                    text(
                        "SELECT month, sum(cr_events), sum(rate_exptime) / sum(exptime_s) "
                        "FROM exposure_cr_rates GROUP BY month"
                    )
                ).all()

        report.references["cr_rate by month from base tables"] = _timed(direct_cr_rate, repeat=1)
        report.references["cr_rate by month from summary"] = report.queries["cr_rate by month"]
        with sessions() as session:
            direct = cr_rate(session, by=("filter",))
            assert direct, "benchmark produced no statistics"
            assert model_performance(session), "benchmark produced no performance rows"
            for table in ("exposures", "cr_statistics", "exposure_metrics", "model_performance_monthly"):
                report.table_sizes[table] = session.execute(
                    text("SELECT pg_size_pretty(pg_total_relation_size(:t))"), {"t": table}
                ).scalar_one()
    finally:
        bench_engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return report
