"""CR statistics and model performance over the whole archive (``crlib stats``).

Queries read the materialised summaries ``cr_rate_daily`` and ``model_performance_monthly``
(see ``sql/README.md``), which keep answers near a second for millions of exposures; a
``proposal`` filter reads the always-current base views through the proposal index instead.
:func:`refresh_summaries` brings the summaries up to date (the nightly pipeline calls it after
recording; ``crlib stats ... --refresh`` does it on demand).

Model performance is pooled: score histograms are summed element-wise over the selected
exposures (the ``hist_sum`` aggregate the migrations define) and the ROC is computed from the
sums, so every valid pixel weighs the same. TPR at a fixed FPR is interpolated linearly between
histogram bin edges (resolution: the bin width).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crlib.errors import DatabaseError

log = logging.getLogger(__name__)

SUMMARY_VIEWS: tuple[str, ...] = ("cr_rate_daily", "model_performance_monthly", "model_performance_total")
DEFAULT_FPRS: tuple[float, ...] = (0.0005, 0.005)

#: Dimension name -> SQL expression over the summary/base rows.
CR_RATE_DIMENSIONS: dict[str, str] = {
    "year": "date_part('year', obs_date)::int",
    "month": "date_trunc('month', obs_date)::date",
    "day": "obs_date",
    "filter": "filter",
    "field_type": "field_type",
    "chip": "chip",
    "exptime": "exptime_bin_s",
}
PERFORMANCE_DIMENSIONS: dict[str, str] = {
    "model": "model_name || ':' || model_version",
    "field_type": "field_type",
    "filter": "filter",
    "month": "month",
    "year": "date_part('year', month)::int",
}


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """Which exposures a statistics query covers (``None``: no restriction).

    Attributes
    ----------
    proposal_id
        One proposal.
    filters
        Filter names (``F606W`` ...).
    field_types
        Field types.
    since, until
        Observation dates, inclusive. Model performance matches whole months.
    model
        ``name`` or ``name:version`` (model performance only).
    """

    proposal_id: int | None = None
    filters: tuple[str, ...] = ()
    field_types: tuple[str, ...] = ()
    since: dt.date | None = None
    until: dt.date | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class PerformanceRow:
    """Pooled performance of one group.

    Attributes
    ----------
    group
        Dimension name -> value.
    n_exposures
        Exposures pooled.
    tp, fp, fn, tn
        Summed confusion counts at each exposure's operating threshold.
    tpr_at_fpr
        ``{fpr: tpr}`` from the pooled ROC.
    fpr, tpr
        Pooled ROC points, shape (n_bins + 1,), from "everything is a CR" to "nothing is".
    """

    group: dict[str, Any]
    n_exposures: int
    tp: int
    fp: int
    fn: int
    tn: int
    tpr_at_fpr: dict[float, float]
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for tables, CSV and JSON (ROC arrays left out)."""
        shown: dict[str, Any] = dict(self.group)
        shown.update(n_exposures=self.n_exposures, tp=self.tp, fp=self.fp, fn=self.fn, tn=self.tn)
        for fpr, tpr in self.tpr_at_fpr.items():
            shown[f"tpr_at_fpr_{fpr:g}"] = None if np.isnan(tpr) else round(tpr, 5)
        return shown


def pooled_roc(hist_cr: np.ndarray, hist_noncr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC from score histograms over probability bins (ascending).

    Parameters
    ----------
    hist_cr, hist_noncr
        Counts of CR / non-CR pixels per probability bin, shape (n_bins,).

    Returns
    -------
    fpr, tpr
        Shape (n_bins + 1,): point ``k`` calls every pixel in bins ``>= k`` a CR.
        NaN where the class is empty.
    """
    cr = np.asarray(hist_cr, dtype=np.float64)
    noncr = np.asarray(hist_noncr, dtype=np.float64)
    tail_cr = np.concatenate([np.cumsum(cr[::-1])[::-1], [0.0]])
    tail_noncr = np.concatenate([np.cumsum(noncr[::-1])[::-1], [0.0]])
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tail_cr / tail_cr[0] if tail_cr[0] > 0 else np.full_like(tail_cr, np.nan)
        fpr = tail_noncr / tail_noncr[0] if tail_noncr[0] > 0 else np.full_like(tail_noncr, np.nan)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR where the ROC reaches false-positive rate ``target`` (linear interpolation)."""
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.interp(target, fpr[::-1], tpr[::-1]))


def _where(
    flt: StatsFilter, *, month_column: str | None, date_column: str | None
) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if flt.filters:
        clauses.append("filter = ANY(:filters)")
        params["filters"] = [f.upper() for f in flt.filters]
    if flt.field_types:
        clauses.append("field_type = ANY(:field_types)")
        params["field_types"] = list(flt.field_types)
    column = date_column or month_column
    if flt.since is not None and column:
        since = flt.since if date_column else flt.since.replace(day=1)
        clauses.append(f"{column} >= :since")
        params["since"] = since
    if flt.until is not None and column:
        clauses.append(f"{column} <= :until")
        params["until"] = flt.until
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _dimensions(by: Sequence[str], known: dict[str, str]) -> list[tuple[str, str]]:
    unknown = [b for b in by if b not in known]
    if unknown:
        raise DatabaseError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(known)}")
    return [(name, known[name]) for name in by]


def cr_rate(
    session: Session, *, by: Sequence[str] = ("month",), where: StatsFilter | None = None
) -> list[dict]:
    """CR counts and the exposure-time-weighted CR rate per group.

    Parameters
    ----------
    session
        Session on the results database.
    by
        Dimensions among :data:`CR_RATE_DIMENSIONS` (``month``, ``filter``, ``chip``, ``exptime`` ...).
    where
        Which exposures to include.

    Returns
    -------
    list of dict
        Per group: the dimensions, ``n_chips``, ``cr_pixels``, ``cr_events``,
        ``events_per_chip`` and ``rate_per_cm2_s`` (sum of rate x exptime / sum of exptime).
    """
    flt = where or StatsFilter()
    dims = _dimensions(by, CR_RATE_DIMENSIONS)
    clause, params = _where(flt, month_column=None, date_column="obs_date")
    if flt.proposal_id is not None:
        source = (
            "(SELECT obs_date, filter, field_type, chip, exptime_bin_s, 1 AS n_chips, cr_pixels, cr_events, "
            "exptime_s, rate_exptime FROM exposure_cr_rates WHERE proposal_id = :proposal_id) AS src"
        )
        params["proposal_id"] = flt.proposal_id
    else:
        source = "cr_rate_daily"
    select_dims = ", ".join(f"{expr} AS {name}" for name, expr in dims)
    group = ", ".join(str(i + 1) for i in range(len(dims)))
    sql = (
        f"SELECT {select_dims + ', ' if dims else ''}sum(n_chips)::bigint AS n_chips, "
        "sum(cr_pixels)::bigint AS cr_pixels, sum(cr_events)::bigint AS cr_events, "
        "sum(rate_exptime) / NULLIF(sum(exptime_s), 0) AS rate_per_cm2_s "
        f"FROM {source}{clause}" + (f" GROUP BY {group} ORDER BY {group}" if dims else "")
    )
    rows = []
    for row in session.execute(text(sql), params).mappings():
        shown = dict(row)
        if shown["n_chips"] is None:
            continue
        shown["events_per_chip"] = (
            round(shown["cr_events"] / shown["n_chips"], 2) if shown["n_chips"] else None
        )
        if shown["rate_per_cm2_s"] is not None:
            shown["rate_per_cm2_s"] = round(float(shown["rate_per_cm2_s"]), 5)
        rows.append(shown)
    return rows


def _model_clause(model: str | None, params: dict[str, Any]) -> str:
    if not model:
        return ""
    name, _, version = model.partition(":")
    params["model_name"] = name
    if version:
        params["model_version"] = version
        return " AND mo.name = :model_name AND v.version = :model_version"
    return " AND mo.name = :model_name"


def model_performance(
    session: Session,
    *,
    by: Sequence[str] = ("model", "field_type", "filter"),
    where: StatsFilter | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> list[PerformanceRow]:
    """Pooled ROC and TPR at fixed FPR per group (model version x field type x filter by default).

    Parameters
    ----------
    session
        Session on the results database.
    by
        Dimensions among :data:`PERFORMANCE_DIMENSIONS`.
    where
        Which exposures to include (dates match whole months unless a proposal is given).
    fprs
        False-positive rates at which to report the TPR.
    """
    flt = where or StatsFilter()
    dims = _dimensions(by, PERFORMANCE_DIMENSIONS)
    params: dict[str, Any] = {}
    model_clause = _model_clause(flt.model, params)
    if flt.proposal_id is not None:
        params["proposal_id"] = flt.proposal_id
        inner = (
            "SELECT model_name, model_version, month, filter, field_type, n_bins, 1 AS n_exposures, "
            "tp, fp, fn, tn, hist_cr, hist_noncr, obs_date FROM exposure_performance "
            "WHERE proposal_id = :proposal_id"
            + model_clause.replace("mo.name", "model_name").replace("v.version", "model_version")
        )
        clause, more = _where(flt, month_column=None, date_column="obs_date")
    else:
        dated = flt.since is not None or flt.until is not None or {"month", "year"} & set(by)
        summary, month = (
            ("model_performance_monthly", "p.month") if dated else ("model_performance_total", "NULL")
        )
        inner = (
            f"SELECT mo.name AS model_name, v.version AS model_version, {month} AS month, p.filter, "
            "p.field_type, p.n_bins, p.n_exposures, p.tp, p.fp, p.fn, p.tn, p.hist_cr, p.hist_noncr "
            f"FROM {summary} p JOIN model_versions v ON v.id = p.model_version_id "
            "JOIN models mo ON mo.id = v.model_id WHERE TRUE" + model_clause
        )
        clause, more = _where(flt, month_column="month", date_column=None)
    params.update(more)
    source = f"(SELECT * FROM ({inner}) AS raw{clause}) AS src"
    keys = [f"{expr} AS {name}" for name, expr in dims] + ["n_bins"]
    group = ", ".join(str(i + 1) for i in range(len(keys)))
    totals = session.execute(
        text(
            f"SELECT {', '.join(keys)}, sum(n_exposures)::bigint AS n_exposures, sum(tp)::bigint AS tp, "
            f"sum(fp)::bigint AS fp, sum(fn)::bigint AS fn, sum(tn)::bigint AS tn, "
            f"hist_sum(hist_cr) AS hist_cr, hist_sum(hist_noncr) AS hist_noncr FROM {source} "
            f"GROUP BY {group} ORDER BY {group}"
        ),
        params,
    ).all()
    width = len(keys)
    results = []
    for row in totals:
        key = tuple(row[:width])
        fpr, tpr = pooled_roc(np.asarray(row.hist_cr, np.int64), np.asarray(row.hist_noncr, np.int64))
        group_values = {name: _plain(value) for (name, _), value in zip(dims, key, strict=False)}
        n_exposures, tp, fp, fn, tn = (int(v) for v in row[width : width + 5])
        results.append(
            PerformanceRow(
                group=group_values,
                n_exposures=n_exposures,
                tp=tp,
                fp=fp,
                fn=fn,
                tn=tn,
                tpr_at_fpr={f: tpr_at_fpr(fpr, tpr, f) for f in fprs},
                fpr=fpr,
                tpr=tpr,
            )
        )
    return results


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def pipeline_status(session: Session, *, where: StatsFilter | None = None) -> list[dict]:
    """Pipeline runs per night and DAG (view ``pipeline_status_nightly``)."""
    flt = where or StatsFilter()
    clauses, params = [], {}
    if flt.since is not None:
        clauses.append("night >= :since")
        params["since"] = flt.since
    if flt.until is not None:
        clauses.append("night <= :until")
        params["until"] = flt.until
    sql = "SELECT * FROM pipeline_status_nightly" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    rows = []
    for row in session.execute(text(sql + " ORDER BY night, dag_id"), params).mappings():
        shown = {k: _plain(v) if not isinstance(v, dt.datetime) else v.isoformat() for k, v in row.items()}
        if shown.get("mean_seconds") is not None:
            shown["mean_seconds"] = round(float(shown["mean_seconds"]), 1)
        rows.append(shown)
    return rows


def refresh_summaries(session: Session, *, concurrently: bool = True) -> dict[str, float]:
    """Recompute the materialised summaries; readers keep seeing the old ones meanwhile.

    Parameters
    ----------
    session
        Session on the results database (its user must own the summaries or be in ``crlib_writer``).
    concurrently
        Use ``REFRESH ... CONCURRENTLY`` (readers not blocked; slower for large changes).

    Returns
    -------
    dict
        Seconds each summary took.
    """
    timings: dict[str, float] = {}
    for view in SUMMARY_VIEWS:
        start = time.perf_counter()
        mode = "CONCURRENTLY " if concurrently else ""
        with session.begin_nested() if session.in_transaction() else session.begin():
            # Summing histograms groups (summary row x bin): keep that hash table in memory.
            session.execute(text("SET LOCAL work_mem = '512MB'"))
            session.execute(text(f"REFRESH MATERIALIZED VIEW {mode}{view}"))
            seconds = time.perf_counter() - start
            session.execute(
                text(
                    "INSERT INTO summary_refreshes (view_name, refreshed_at, seconds) VALUES (:v, now(), :s) "
                    "ON CONFLICT (view_name) DO UPDATE SET refreshed_at = now(), seconds = EXCLUDED.seconds"
                ),
                {"v": view, "s": seconds},
            )
        timings[view] = seconds
        log.info("refreshed %s in %.2f s", view, seconds)
    return timings


def summaries_refreshed_at(session: Session) -> dict[str, dt.datetime | None]:
    """When each summary was last refreshed (``None``: only at creation)."""
    found: dict[str, dt.datetime] = dict(
        session.execute(text("SELECT view_name, refreshed_at FROM summary_refreshes")).all()
    )
    return {view: found.get(view) for view in SUMMARY_VIEWS}
