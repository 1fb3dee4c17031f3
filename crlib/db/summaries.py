"""Statistics summaries: which (month x filter) cells are out of date, and refreshing only those.

Three summary tables keep ``crlib stats`` near a second over millions of exposures:
``cr_rate_daily`` (CR sums per day x filter x field type x chip x exposure-time bin),
``performance_monthly`` (confusion sums and summed score histograms per model version x month x
filter x field type x histogram length x provenance: split, truth status, border, DQ rule) and
``performance_total`` (the same over all months).

Every write that can change them logs its (month, filter) cells in ``summary_changes``: statement
triggers for CR statistics, metrics updates/deletes and exposure changes, and
:func:`crlib.db.metric_store.record_metrics` for the metrics it inserts (all in the writer's
transaction). :func:`refresh_summaries` recomputes just the logged cells from the recorded rows
(SQL for CR sums; histograms decoded and summed with numpy), adjusts ``performance_total`` by the
difference, and removes the log entries it has covered. Its cost is proportional to the data in
the changed cells, not to the archive: a nightly run touching a few visits refreshes in well
under a second even with a million exposures recorded.

Invariants (each refresh batch is one transaction under an advisory lock):
``performance_total`` = sum of ``performance_monthly`` over months, and every cell without a log
entry has up-to-date rows. So statistics queries (:mod:`crlib.db.stats`) stay exact before a
refresh by reading the summaries for unlogged cells and the recorded rows for logged ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crlib.db import copyio
from crlib.db.histcodec import decode_histogram, encode_histograms
from crlib.errors import DatabaseError

log = logging.getLogger(__name__)

#: Summary tables, in the order a refresh updates them.
SUMMARY_TABLES: tuple[str, ...] = ("cr_rate_daily", "performance_monthly", "performance_total")
#: Serialises refreshers (taken per batch transaction).
REFRESH_LOCK_KEY = 0x6372_6C69_6201
#: Lower edges (seconds) of the exposure-time bins of ``cr_rate_daily`` (as in ``exposure_cr_rates``).
EXPTIME_BIN_EDGES = "ARRAY[0, 30, 100, 300, 600, 1000, 2000]::float8[]"

Cell = tuple[dt.date, str]
#: ``unnest`` of the cell arrays bound as ``:cell_months`` / ``:cell_filters`` (SQLAlchemy style).
CELLS = "unnest(CAST(:cell_months AS date[]), CAST(:cell_filters AS varchar[])) AS c(month, filter)"
#: The same for psycopg2-style (COPY) queries.
CELLS_PY = "unnest(CAST(%(cell_months)s AS date[]), CAST(%(cell_filters)s AS varchar[])) AS c(month, filter)"
IN_CELL = (
    "{t}.filter = c.filter AND {t}.obs_date >= c.month "
    "AND {t}.obs_date < (c.month + interval '1 month')::date"
)


def exposures_in(cells: str) -> str:
    """FROM items: the cells ``c`` and, for each, its exposures ``e`` (an index range scan per cell).

    The ``OFFSET 0`` keeps the planner from flattening the lateral subquery into a hash join
    over every exposure, which it prefers at a million exposures and is ten times slower.
    """
    return (
        f"{cells} CROSS JOIN LATERAL (SELECT * FROM exposures e WHERE "
        + IN_CELL.format(t="e")
        + " OFFSET 0) AS e"
    )


#: Columns of one chip's CR statistics as ``cr_rate_daily`` sums them (as the view ``exposure_cr_rates``).
CR_CHIP_COLUMNS = (
    "e.obs_date, e.filter, COALESCE(e.field_type, 'unknown') AS field_type, s.chip, "
    f"({EXPTIME_BIN_EDGES})[width_bucket(e.exptime_s, {EXPTIME_BIN_EDGES})] AS exptime_bin_s, "
    "s.cr_pixels, s.cr_events, e.exptime_s, s.rate_per_cm2_s * s.exptime_s AS rate_exptime"
)


@dataclass
class PooledSums:
    """Running sums of performance rows (exposures, confusion counts, the four histograms).

    Attributes
    ----------
    n_bins
        Histogram length.
    n_exposures, n_dilated
        Exposures pooled; how many of them had dilated histograms.
    counts
        ``[tp, fp, fn, tn]``.
    hists
        ``(4, n_bins)`` int64: CR, non-CR, dilated CR, dilated non-CR.
    """

    n_bins: int
    n_exposures: int = 0
    n_dilated: int = 0
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    hists: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.hists = np.zeros((4, self.n_bins), dtype=np.int64)

    def add(
        self,
        n_exposures: int,
        n_dilated: int,
        counts: Sequence[int],
        blobs: Sequence[memoryview | bytes | None],
        *,
        sign: int = 1,
    ) -> None:
        """Add (or with ``sign=-1`` subtract) one row: its counts and its encoded histograms."""
        self.n_exposures += sign * n_exposures
        self.n_dilated += sign * n_dilated
        for k in range(4):
            self.counts[k] += sign * int(counts[k])
        for k, blob in enumerate(blobs):
            if blob is not None:
                decoded = decode_histogram(blob, self.n_bins)
                if sign > 0:
                    self.hists[k] += decoded
                else:
                    self.hists[k] -= decoded

    def merge(self, other: PooledSums, *, sign: int = 1) -> None:
        """Add (or subtract) another set of sums of the same length."""
        self.n_exposures += sign * other.n_exposures
        self.n_dilated += sign * other.n_dilated
        for k in range(4):
            self.counts[k] += sign * other.counts[k]
        self.hists += sign * other.hists


def _add_performance_row(
    sums: dict[tuple, PooledSums], key: tuple, n_bins: int, f: copyio.Row, start: int, sign: int
) -> None:
    """Fold the COPY fields ``n_exposures, n_dilated, tp, fp, fn, tn, 4 hists`` at ``start`` into ``sums``."""
    entry = sums.get(key)
    if entry is None:
        entry = sums[key] = PooledSums(n_bins)
    values = [copyio.int_value(v) or 0 for v in f[start : start + 6]]
    entry.add(values[0], values[1], values[2:6], f[start + 6 : start + 10], sign=sign)


#: Encoders of the provenance keys ``split, truth_status, border_px, dq_excluded``.
_PROVENANCE_FIELDS = (copyio.text_field, copyio.text_field, copyio.int2_field, copyio.bool_field)
_MONTHLY_KEY_FIELDS = (
    copyio.int4_field,
    copyio.date_field,
    copyio.text_field,
    copyio.text_field,
    copyio.int2_field,
    *_PROVENANCE_FIELDS,
)
_TOTAL_KEY_FIELDS = (
    copyio.int4_field,
    copyio.text_field,
    copyio.text_field,
    copyio.int2_field,
    *_PROVENANCE_FIELDS,
)
#: Position of ``n_bins`` in the total keys.
_TOTAL_BINS = 3


def _performance_payload(rows: Iterable[tuple[tuple, PooledSums]], key_fields: Sequence) -> bytes:
    """Binary COPY rows (keys, then counts and encoded histograms) of the non-empty sums."""
    encoded: list[bytes] = []
    for key, sums in rows:
        if sums.n_exposures == 0:
            continue
        if sums.n_exposures < 0 or sums.hists.min() < 0 or min(sums.counts) < 0:
            raise DatabaseError(
                f"performance summary {key} went negative: the summaries disagree with the recorded "
                "metrics; run `crlib stats refresh --full`"
            )
        blobs: list[bytes | None] = list(encode_histograms(sums.hists))
        if sums.n_dilated == 0:
            blobs[2:] = [None, None]
        fields = [encode(value) for encode, value in zip(key_fields, key, strict=True)]
        fields += [copyio.int8_field(sums.n_exposures), copyio.int8_field(sums.n_dilated)]
        fields += [copyio.int8_field(v) for v in sums.counts]
        fields += [copyio.field(b) for b in blobs]
        encoded.append(copyio.row_count(len(fields)) + b"".join(fields))
    return copyio.payload(encoded)


_SUM_COLUMNS = (
    "n_exposures, n_dilated, tp, fp, fn, tn, hist_cr, hist_noncr, hist_cr_dilated, hist_noncr_dilated"
)
#: Provenance key columns of the performance summaries (and of ``exposure_metrics``).
PROVENANCE_KEYS = "split, truth_status, border_px, dq_excluded"
_MONTHLY_KEYS = f"model_version_id, month, filter, field_type, n_bins, {PROVENANCE_KEYS}"
_TOTAL_KEYS = f"model_version_id, filter, field_type, n_bins, {PROVENANCE_KEYS}"


def _provenance_key(f: copyio.Row, start: int) -> tuple:
    return (
        copyio.text_value(f[start]),
        copyio.text_value(f[start + 1]),
        copyio.int_value(f[start + 2]),
        copyio.bool_value(f[start + 3]),
    )


def _monthly_key(f: copyio.Row) -> tuple:
    return (
        copyio.int_value(f[0]),
        copyio.date_value(f[1]),
        copyio.text_value(f[2]),
        copyio.text_value(f[3]),
        copyio.int_value(f[4]),
        *_provenance_key(f, 5),
    )


def _total_key(f: copyio.Row) -> tuple:
    return (
        copyio.int_value(f[0]),
        copyio.text_value(f[1]),
        copyio.text_value(f[2]),
        copyio.int_value(f[3]),
        *_provenance_key(f, 4),
    )


def _refresh_cr(session: Session, params: dict) -> None:
    session.execute(text(f"DELETE FROM cr_rate_daily d USING {CELLS} WHERE " + IN_CELL.format(t="d")), params)
    session.execute(
        text(
            "INSERT INTO cr_rate_daily (obs_date, filter, field_type, chip, exptime_bin_s, n_chips, "
            "cr_pixels, cr_events, exptime_s, rate_exptime) "
            "SELECT r.obs_date, r.filter, r.field_type, r.chip, r.exptime_bin_s, count(*), sum(r.cr_pixels), "
            "sum(r.cr_events), sum(r.exptime_s), sum(r.rate_exptime) "
            f"FROM (SELECT {CR_CHIP_COLUMNS} FROM {exposures_in(CELLS)} "
            "JOIN cr_statistics s ON s.rootname = e.rootname) AS r GROUP BY 1, 2, 3, 4, 5"
        ),
        params,
    )


def _refresh_performance(session: Session, params: dict) -> tuple[float, float]:
    """Recompute the monthly rows of the cells and move the totals by the difference."""
    start = time.perf_counter()
    old: dict[tuple, PooledSums] = {}
    new: dict[tuple, PooledSums] = {}
    copyio.copy_out(
        session,
        f"SELECT p.{_MONTHLY_KEYS.replace(', ', ', p.')}, p.{_SUM_COLUMNS.replace(', ', ', p.')} "
        f"FROM {CELLS_PY} JOIN performance_monthly p ON p.month = c.month AND p.filter = c.filter",
        params,
        lambda f: _add_performance_row(old, _monthly_key(f), int(copyio.int_value(f[4]) or 0), f, 9, 1),
    )
    copyio.copy_out(
        session,
        "SELECT m.model_version_id, c.month, e.filter, COALESCE(m.field_type, e.field_type, 'unknown'), "
        "m.n_bins, m.split, m.truth_status, m.border_px, m.dq_excluded, "
        "1::bigint, (m.hist_cr_dilated IS NOT NULL)::int::bigint, m.tp, m.fp, m.fn, m.tn, "
        "m.hist_cr, m.hist_noncr, m.hist_cr_dilated, m.hist_noncr_dilated "
        f"FROM {exposures_in(CELLS_PY)} JOIN exposure_metrics m ON m.rootname = e.rootname",
        params,
        lambda f: _add_performance_row(new, _monthly_key(f), int(copyio.int_value(f[4]) or 0), f, 9, 1),
    )
    session.execute(
        text(
            f"DELETE FROM performance_monthly p USING {CELLS} WHERE p.month = c.month AND p.filter = c.filter"
        ),
        params,
    )
    if new:
        copyio.copy_in(
            session,
            f"COPY performance_monthly ({_MONTHLY_KEYS}, {_SUM_COLUMNS}) FROM STDIN (FORMAT binary)",
            _performance_payload(sorted(new.items()), _MONTHLY_KEY_FIELDS),
        )
    monthly_s = time.perf_counter() - start
    start = time.perf_counter()
    delta: dict[tuple, PooledSums] = {}
    for sums_by_key, sign in ((new, 1), (old, -1)):
        for (version, _, *rest), sums in sums_by_key.items():
            key = (version, *rest)
            entry = delta.setdefault(key, PooledSums(int(key[_TOTAL_BINS])))
            entry.merge(sums, sign=sign)
    if delta:
        keys = sorted(delta)
        names = ("ids", "filters", "types", "bins", "splits", "truths", "borders", "dqs")
        key_params = {name: [k[i] for k in keys] for i, name in enumerate(names)}
        unnest = (
            "unnest(CAST({p}ids{s} AS integer[]), CAST({p}filters{s} AS varchar[]), "
            "CAST({p}types{s} AS varchar[]), CAST({p}bins{s} AS smallint[]), "
            "CAST({p}splits{s} AS varchar[]), CAST({p}truths{s} AS varchar[]), "
            "CAST({p}borders{s} AS smallint[]), CAST({p}dqs{s} AS boolean[])) "
            "AS k(id, filter, field_type, n_bins, split, truth_status, border_px, dq_excluded)"
        )
        match = (
            "p.model_version_id = k.id AND p.filter = k.filter AND p.field_type = k.field_type "
            "AND p.n_bins = k.n_bins AND p.split = k.split AND p.truth_status = k.truth_status "
            "AND p.border_px = k.border_px AND p.dq_excluded = k.dq_excluded"
        )
        totals: dict[tuple, PooledSums] = {}
        copyio.copy_out(
            session,
            f"SELECT p.{_TOTAL_KEYS.replace(', ', ', p.')}, p.{_SUM_COLUMNS.replace(', ', ', p.')} "
            f"FROM {unnest.format(p='%(', s=')s')} JOIN performance_total p ON {match}",
            key_params,
            lambda f: _add_performance_row(totals, _total_key(f), int(copyio.int_value(f[3]) or 0), f, 8, 1),
        )
        for key, change in delta.items():
            totals.setdefault(key, PooledSums(int(key[_TOTAL_BINS]))).merge(change)
        session.execute(
            text(f"DELETE FROM performance_total p USING {unnest.format(p=':', s='')} WHERE {match}"),
            key_params,
        )
        copyio.copy_in(
            session,
            f"COPY performance_total ({_TOTAL_KEYS}, {_SUM_COLUMNS}) FROM STDIN (FORMAT binary)",
            _performance_payload(sorted((k, totals[k]) for k in keys), _TOTAL_KEY_FIELDS),
        )
    return monthly_s, time.perf_counter() - start


def _refresh_cells(session: Session, cells: Sequence[Cell], timings: dict[str, float]) -> int:
    """Refresh ``cells`` in the session's current transaction; returns the log entries consumed."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REFRESH_LOCK_KEY})
    session.execute(text("SET LOCAL jit = off"))  # compiling costs more than these queries take
    params = {"cell_months": [c[0] for c in cells], "cell_filters": [c[1] for c in cells]}
    # Read the log first: entries committed later stay for the next refresh.
    ids = list(
        session.scalars(
            text(
                f"SELECT s.id FROM {CELLS} JOIN summary_changes s "
                "ON s.month = c.month AND s.filter = c.filter"
            ),
            params,
        )
    )
    if not ids:
        return 0
    start = time.perf_counter()
    _refresh_cr(session, params)
    timings["cr_rate_daily"] += time.perf_counter() - start
    monthly_s, total_s = _refresh_performance(session, params)
    timings["performance_monthly"] += monthly_s
    timings["performance_total"] += total_s
    session.execute(text("DELETE FROM summary_changes WHERE id = ANY(:ids)"), {"ids": ids})
    return len(ids)


def pending_cells(session: Session) -> list[Cell]:
    """The (month, filter) cells whose summaries are out of date, oldest month first."""
    rows = session.execute(text("SELECT DISTINCT month, filter FROM summary_changes ORDER BY 1, 2")).all()
    return [(r[0], r[1]) for r in rows]


def _mark_everything(session: Session) -> None:
    """Empty the summaries and log every cell with data (the start of a full rebuild)."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REFRESH_LOCK_KEY})
    session.execute(text("DELETE FROM performance_total"))
    session.execute(text("DELETE FROM performance_monthly"))
    session.execute(text("DELETE FROM cr_rate_daily"))
    session.execute(
        text(
            "INSERT INTO summary_changes (month, filter) "
            "SELECT DISTINCT date_trunc('month', obs_date)::date, filter FROM exposures"
        )
    )


def refresh_summaries(
    session: Session, *, concurrently: bool = True, full: bool = False, cells_per_batch: int = 32
) -> dict[str, float]:
    """Bring the statistics summaries up to date by recomputing the cells logged as changed.

    Parameters
    ----------
    session
        Session on the results database (a writer: ``crlib_writer`` or the owner).
    concurrently
        Commit after each batch of cells, so recorders and readers never wait for long and the
        work done survives an interruption. ``False``: one transaction for everything. Readers
        are never blocked either way, and they get exact answers before, during and after a
        refresh (see :mod:`crlib.db.stats`). When ``session`` is already in a transaction
        (including one SQLAlchemy began implicitly for an earlier query in it), the batches run
        in savepoints of it and the caller must commit.
    full
        Rebuild every summary from the recorded rows (after restoring a backup or editing
        summary tables by hand); the cost is then proportional to the whole archive.
    cells_per_batch
        (month, filter) cells recomputed per transaction.

    Returns
    -------
    dict
        Seconds spent on each summary table (``cr_rate_daily``, ``performance_monthly``,
        ``performance_total``), summed over the batches.
    """
    timings = dict.fromkeys(SUMMARY_TABLES, 0.0)
    outer = session.in_transaction()

    def transaction():  # type: ignore[no-untyped-def]
        return session.begin_nested() if outer else session.begin()

    if full:
        with transaction():
            _mark_everything(session)
    with transaction():
        cells = pending_cells(session)
    consumed = 0
    if concurrently:
        for first in range(0, len(cells), max(1, cells_per_batch)):
            with transaction():
                consumed += _refresh_cells(session, cells[first : first + cells_per_batch], timings)
    elif cells:
        with transaction():
            consumed = _refresh_cells(session, cells, timings)
    with transaction():
        for table, seconds in timings.items():
            session.execute(
                text(
                    "INSERT INTO summary_refreshes (view_name, refreshed_at, seconds) VALUES (:v, now(), :s) "
                    "ON CONFLICT (view_name) DO UPDATE SET refreshed_at = now(), seconds = EXCLUDED.seconds"
                ),
                {"v": table, "s": seconds},
            )
    log.info(
        "refreshed %d (month, filter) cells (%d change entries) in %.2f s",
        len(cells),
        consumed,
        sum(timings.values()),
    )
    return timings


@dataclass(frozen=True, slots=True)
class SummaryState:
    """How current the summaries are.

    Attributes
    ----------
    refreshed_at
        Summary table -> when it was last refreshed (``None``: never).
    pending_cells
        (month, filter) cells changed since; queries compute them from the recorded rows.
    pending_since
        When the oldest of those changes was made.
    """

    refreshed_at: dict[str, dt.datetime | None]
    pending_cells: int
    pending_since: dt.datetime | None

    def describe(self) -> str:
        """One line for users, e.g. ``summaries refreshed 2026-11-22 03:10 UTC; 3 cells changed since``."""
        times = [t for t in self.refreshed_at.values() if t is not None]
        when = (
            min(times).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if times and len(times) == len(self.refreshed_at)
            else "never"
        )
        if not self.pending_cells:
            return f"summaries refreshed {when}; up to date"
        return (
            f"summaries refreshed {when}; {self.pending_cells} month x filter cell(s) changed since "
            "(answered from the recorded rows; `crlib stats refresh` folds them in)"
        )


def summary_state(session: Session) -> SummaryState:
    """When the summaries were refreshed and how many cells changed since."""
    found: dict[str, dt.datetime] = dict(
        session.execute(text("SELECT view_name, refreshed_at FROM summary_refreshes")).all()
    )
    pending, since = session.execute(
        text("SELECT count(DISTINCT (month, filter)), min(changed_at) FROM summary_changes")
    ).one()
    return SummaryState(
        refreshed_at={table: found.get(table) for table in SUMMARY_TABLES},
        pending_cells=int(pending or 0),
        pending_since=since,
    )
