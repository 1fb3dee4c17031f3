"""``crlib bench db``: statistics latency over a generated archive and bulk-recording throughput.

The benchmark works in its own scratch database (created on the configured server and dropped
afterwards). It fills it server-side (``generate_series``): exposures (4 per visit, 200 per
proposal, 2002-2024, seven filters, three field types), two chips of CR statistics each, and
one metrics row each whose four 1,699-bin histograms are copied from 64 synthetic templates with
the magnitudes of a full ACS/WFC exposure (1.6e7 valid pixels, 1% CR). It then builds the
summaries with the real :func:`~crlib.db.summaries.refresh_summaries` (full rebuild), records a
batch of freshly generated metrics through :func:`~crlib.db.metric_store.record_metrics`
(histograms as tuples of ints, as the scoring stage makes them), times the statistics queries
while those cells are still unrefreshed (answered partly from live rows), refreshes them (the
nightly cost), and times every query again.

Recording is compared fairly (:func:`compare_recording`): the same rows are inserted by
``record_metrics`` (binary COPY) and by the usual batched alternatives in one transaction
(psycopg2 ``execute_values``, SQLAlchemy Core ``insert()`` with a list of rows, ORM ``add_all``),
plus the naive one ORM transaction per row; each method encodes its histograms and commits inside
its timer, connections are opened and modules imported before any timer starts, and the order
rotates between repetitions (medians reported).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from crlib.bench.metric_archive import generate_archive, synthetic_metrics

log = logging.getLogger(__name__)

STATS_TARGET_S = 1.0
RECORD_TARGET_ROWS_PER_S = 5000.0
#: How many rows the naive baseline (one ORM transaction per row) inserts at most.
PER_ROW_CAP = 500


@dataclass
class RecordMethod:
    """Bulk-recording rate of one way of inserting the same metrics rows.

    Attributes
    ----------
    label
        What the method does, as the report prints it.
    rows
        Rows inserted per timed sample.
    samples
        Rows per second of every timed repetition (median in :attr:`rows_per_s`).
    """

    label: str
    rows: int
    samples: list[float] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        """Median rate over the repetitions (0 before any)."""
        return statistics.median(self.samples) if self.samples else 0.0


#: Recording methods compared by the benchmark: ``copy`` is crlib's
#: :func:`~crlib.db.metric_store.record_metrics`; the others insert the same rows the usual ways.
RECORD_METHODS: dict[str, str] = {
    "copy": "crlib record_metrics: binary COPY, one transaction",
    "execute_values": "psycopg2 execute_values (100 rows per statement), one transaction",
    "core_executemany": "SQLAlchemy Core insert() with a list of rows (insertmanyvalues), one transaction",
    "orm_bulk": "SQLAlchemy ORM add_all, one transaction",
    "orm_per_row": "SQLAlchemy ORM, one INSERT and transaction per row (naive)",
}
#: The fair baselines: batched inserts of the same rows in one transaction.
FAIR_BASELINES: tuple[str, ...] = ("execute_values", "core_executemany", "orm_bulk")


@dataclass
class BenchReport:
    """Measurements of one benchmark run (seconds unless named otherwise)."""

    exposures: int
    bins: int
    timings: dict[str, float] = field(default_factory=dict)
    queries: dict[str, float] = field(default_factory=dict)
    live_queries: dict[str, float] = field(default_factory=dict)
    record_rows: int = 0
    record_rows_per_s: float = 0.0
    rerecord_rows_per_s: float = 0.0
    single_row_calls_per_s: float = 0.0
    reference_rows_per_s: float = 0.0
    record_methods: dict[str, RecordMethod] = field(default_factory=dict)
    record_ratios: dict[str, float] = field(default_factory=dict)
    table_sizes: dict[str, str] = field(default_factory=dict)
    bytes_per_metrics_row: float = 0.0
    load_average: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def passed(self) -> bool:
        """Whether every query met :data:`STATS_TARGET_S` and recording met its rate target."""
        return (
            all(v <= STATS_TARGET_S for v in self.queries.values())
            and all(v <= STATS_TARGET_S for v in self.live_queries.values())
            and self.record_rows_per_s >= RECORD_TARGET_ROWS_PER_S
        )


def _timed(function: Callable[[], Any], *, repeat: int) -> float:
    """Median wall time of ``repeat`` calls (after one warm-up call)."""
    function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def stats_queries(sessions: sessionmaker[Session]) -> dict[str, Callable[[], Any]]:
    """The ``crlib stats`` questions the benchmark times, each in a new session."""
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
        "performance by year, all time": run(model_performance, by=("model", "year")),
        "performance, one field type, one proposal": run(
            model_performance, where=StatsFilter(proposal_id=10007, field_types=("extragalactic",))
        ),
        "pipeline status per night": run(pipeline_status),
    }


def _baseline_rows(metrics: list[Any], version_id: int) -> list[dict[str, Any]]:
    """``exposure_metrics`` rows of ``metrics`` as a baseline writes them (encoded in its timer)."""
    import json

    from crlib.db.histcodec import encode_histogram

    return [
        {
            "rootname": m.rootname,
            "model_version_id": version_id,
            "field_type": m.field_type,
            "tp": m.tp,
            "fp": m.fp,
            "fn": m.fn,
            "tn": m.tn,
            "tpr_at_fpr": json.dumps(m.tpr_at_fpr),
            "tpr_at_fpr_dilated": json.dumps(m.tpr_at_fpr_dilated),
            "n_bins": len(m.hist_cr),
            "hist_cr": encode_histogram(m.hist_cr),
            "hist_noncr": encode_histogram(m.hist_noncr),
            "hist_cr_dilated": encode_histogram(m.hist_cr_dilated),
            "hist_noncr_dilated": encode_histogram(m.hist_noncr_dilated),
            "truth_status": m.truth_status,
            "truth_method": m.truth_method,
        }
        for m in metrics
    ]


def _insert_batch(session: Session, method: str, metrics: list[Any], version_id: int) -> None:
    """Insert ``metrics`` with one of :data:`RECORD_METHODS` (the part the benchmark times)."""
    from sqlalchemy import insert

    from crlib.db.metric_store import record_metrics
    from crlib.db.orm import ExposureMetricsRow, table_of

    if method == "copy":
        record_metrics(session, metrics)
        return
    if method == "orm_per_row":
        for row in _baseline_rows(metrics, version_id):
            row["tpr_at_fpr"] = _json_value(row["tpr_at_fpr"])
            row["tpr_at_fpr_dilated"] = _json_value(row["tpr_at_fpr_dilated"])
            with session.begin():
                session.add(ExposureMetricsRow(**row))
        return
    with session.begin():
        rows = _baseline_rows(metrics, version_id)
        if method == "execute_values":
            from psycopg2.extras import execute_values

            columns = list(rows[0])
            template = "(" + ", ".join("%s::jsonb" if c.startswith("tpr_") else "%s" for c in columns) + ")"
            cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            execute_values(
                cursor,
                f"INSERT INTO exposure_metrics ({', '.join(columns)}) VALUES %s",
                [tuple(row.values()) for row in rows],
                template=template,
                page_size=100,
            )
        elif method == "core_executemany":
            for row in rows:
                row["tpr_at_fpr"] = _json_value(row["tpr_at_fpr"])
                row["tpr_at_fpr_dilated"] = _json_value(row["tpr_at_fpr_dilated"])
            session.execute(insert(table_of(ExposureMetricsRow)), rows)
        elif method == "orm_bulk":
            for row in rows:
                row["tpr_at_fpr"] = _json_value(row["tpr_at_fpr"])
                row["tpr_at_fpr_dilated"] = _json_value(row["tpr_at_fpr_dilated"])
            session.add_all([ExposureMetricsRow(**row) for row in rows])
        else:
            raise ValueError(f"unknown recording method {method!r}")


def _json_value(text_value: str) -> Any:
    import json

    return json.loads(text_value)


def compare_recording(
    sessions: sessionmaker[Session],
    rootnames: list[str],
    *,
    bins: int,
    repeat: int = 3,
    methods: tuple[str, ...] = tuple(RECORD_METHODS),
    per_row_cap: int = PER_ROW_CAP,
) -> dict[str, RecordMethod]:
    """Time every recording method on the same metrics rows, ``repeat`` times, in rotating order.

    Every method inserts the same rows (same exposures, same histograms) under its own model
    version, into a table in the same state: each sample's rows are deleted again (untimed)
    before the next. Imports, the rows' synthesis and the database connection (a pooled one,
    opened before the clock starts) are outside the timers; encoding the histograms and the
    commit are inside, for every method. Repetition ``k`` runs the methods in the order rotated
    by ``k``, so no method always runs first (cold caches) or last.

    Parameters
    ----------
    sessions
        Sessions on a migrated database holding ``rootnames`` as exposures.
    rootnames
        Exposures whose metrics are inserted (the naive per-row method uses the first
        ``per_row_cap`` of them: at a few hundred rows per second it would dominate the run).
    bins
        Histogram bins.
    repeat
        Timed repetitions per method.
    methods
        Subset of :data:`RECORD_METHODS`.
    per_row_cap
        Rows of the naive per-row method.

    Returns
    -------
    dict
        :class:`RecordMethod` per method name.
    """
    import dataclasses

    import psycopg2.extras  # noqa: F401  (imported before any clock starts)

    from crlib.db.metric_store import record_metrics  # noqa: F401
    from crlib.db.model_registry import record_model_version

    unknown = [m for m in methods if m not in RECORD_METHODS]
    if unknown:
        raise ValueError(f"unknown recording methods {unknown}; choose among {', '.join(RECORD_METHODS)}")
    batch = synthetic_metrics(rootnames, bins=bins, model_version="bench", seed=8)
    results = {
        m: RecordMethod(RECORD_METHODS[m], min(len(batch), per_row_cap) if m == "orm_per_row" else len(batch))
        for m in methods
    }
    for k in range(repeat):
        order = list(methods[k % len(methods) :]) + list(methods[: k % len(methods)])
        for method in order:
            version = f"bench-{method}-{k}"
            with sessions() as session:
                version_id = record_model_version(
                    session, model_name="deepcr-acs-wfc", version=version, source="mlflow"
                )
                session.commit()
            rows = [dataclasses.replace(m, model_version=version) for m in batch[: results[method].rows]]
            with sessions() as session:
                session.execute(text("SELECT 1"))  # the pooled connection is open before timing
                session.commit()
                start = time.perf_counter()
                _insert_batch(session, method, rows, version_id)
                elapsed = time.perf_counter() - start
            results[method].samples.append(len(rows) / elapsed)
            log.info("record %s: %.0f rows/s", method, len(rows) / elapsed)
            with sessions() as session, session.begin():
                session.execute(
                    text("DELETE FROM exposure_metrics WHERE model_version_id = :id"), {"id": version_id}
                )
    return results


def recording_ratios(methods: dict[str, RecordMethod]) -> dict[str, float]:
    """crlib's COPY rate over each other method's (``copy_over_<method>``), from the medians."""
    copy = methods.get("copy")
    if copy is None or not copy.rows_per_s:
        return {}
    return {
        f"copy_over_{name}": round(copy.rows_per_s / method.rows_per_s, 2)
        for name, method in methods.items()
        if name != "copy" and method.rows_per_s > 0
    }


def _record_throughput(
    sessions: sessionmaker[Session], report: BenchReport, *, bins: int, rows: int, repeat: int
) -> None:
    from crlib.db.metric_store import record_metrics

    with sessions() as session:
        rootnames = list(
            session.scalars(text("SELECT rootname FROM exposures ORDER BY rootname LIMIT :n"), {"n": rows})
        )
    report.record_methods = compare_recording(sessions, rootnames, bins=bins, repeat=repeat)
    report.record_ratios = recording_ratios(report.record_methods)
    report.record_rows = report.record_methods["copy"].rows
    report.record_rows_per_s = report.record_methods["copy"].rows_per_s
    report.reference_rows_per_s = report.record_methods["orm_per_row"].rows_per_s
    first = synthetic_metrics(rootnames, bins=bins, model_version="2")
    with sessions() as session:
        record_metrics(session, first)
    again = synthetic_metrics(rootnames, bins=bins, model_version="2", seed=6)
    with sessions() as session:  # the same keys again: every row is replaced
        session.execute(text("SELECT 1"))
        session.commit()
        start = time.perf_counter()
        record_metrics(session, again)
        report.rerecord_rows_per_s = len(again) / (time.perf_counter() - start)
    singles = synthetic_metrics(rootnames[-min(200, len(rootnames)) :], bins=bins, model_version="3", seed=7)
    with sessions() as session:  # as the pipeline does: one call (transaction) per exposure
        session.execute(text("SELECT 1"))
        session.commit()
        start = time.perf_counter()
        for metric in singles:
            record_metrics(session, [metric])
        report.single_row_calls_per_s = len(singles) / (time.perf_counter() - start)


def run_db_benchmark(
    engine: Engine,
    *,
    exposures: int = 1_000_000,
    bins: int | None = None,
    record_rows: int = 5000,
    repeat: int = 3,
    record_repeats: int = 3,
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
        Metrics rows recorded through :func:`~crlib.db.metric_store.record_metrics` for the
        throughput figure (at most ``exposures``).
    repeat
        Timed repetitions per query (median reported, after a warm-up).
    record_repeats
        Timed repetitions per recording method (:func:`compare_recording`; median reported).
    """
    from sqlalchemy import create_engine

    from crlib.db.engine import session_factory
    from crlib.db.migrate import upgrade
    from crlib.db.model_registry import record_model_version
    from crlib.db.stats import cr_rate, model_performance
    from crlib.db.summaries import refresh_summaries, summary_state

    if bins is None:
        from crlib.metrics.histograms import N_SCORE_BINS

        bins = N_SCORE_BINS
    report = BenchReport(exposures=exposures, bins=bins)
    report.load_average["start"] = os.getloadavg()
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
        report.timings["generate archive"] = time.perf_counter() - start
        log.info("generated %d exposures in %.1f s", exposures, report.timings["generate archive"])
        start = time.perf_counter()
        with bench_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE exposures, cr_statistics"))
            # storage measured on the generated rows only (the recording comparison below deletes
            # what it inserts, which leaves dead rows in the table)
            rows_now = connection.execute(text("SELECT count(*) FROM exposure_metrics")).scalar_one()
            size = connection.execute(text("SELECT pg_total_relation_size('exposure_metrics')")).scalar_one()
            report.bytes_per_metrics_row = size / max(1, rows_now)
            connection.execute(text("ANALYZE exposure_metrics, summary_changes"))
        report.timings["vacuum/analyze"] = time.perf_counter() - start
        with sessions() as session:
            start = time.perf_counter()
            refresh_summaries(session, full=True, cells_per_batch=64)
            report.timings["refresh: full rebuild of the summaries"] = time.perf_counter() - start
        with bench_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE cr_rate_daily, performance_monthly, performance_total"))

        _record_throughput(
            sessions, report, bins=bins, rows=min(record_rows, exposures), repeat=record_repeats
        )
        queries = stats_queries(sessions)
        with sessions() as session:
            pending = summary_state(session).pending_cells
        report.timings["changed cells after recording"] = float(pending)
        for label in (
            "cr_rate by month",
            "performance model x field type x filter",
            "performance by year, all time",
        ):
            report.live_queries[label] = _timed(queries[label], repeat=repeat)
        with sessions() as session:
            start = time.perf_counter()
            refresh_summaries(session)
            report.timings["refresh after recording (changed cells only)"] = time.perf_counter() - start
        for label, query in queries.items():
            report.queries[label] = _timed(query, repeat=repeat)
            log.info("%s: %.3f s", label, report.queries[label])
        with sessions() as session:
            assert cr_rate(session, by=("filter",)), "benchmark produced no statistics"
            assert model_performance(session), "benchmark produced no performance rows"
            for table in (
                "exposures",
                "cr_statistics",
                "exposure_metrics",
                "cr_rate_daily",
                "performance_monthly",
            ):
                report.table_sizes[table] = session.execute(
                    text("SELECT pg_size_pretty(pg_total_relation_size(:t))"), {"t": table}
                ).scalar_one()
    finally:
        bench_engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        report.load_average["end"] = os.getloadavg()
    return report
