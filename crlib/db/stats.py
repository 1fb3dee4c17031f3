"""CR statistics and model performance over the whole archive (``crlib stats``).

Answers come from the summary tables (see :mod:`crlib.db.summaries`) for every (month x filter)
cell that has not changed since the last refresh, and from the recorded rows for the cells logged
in ``summary_changes``, within one SQL statement (one snapshot). So they are exact right after
recording, before :func:`refresh_summaries` has run; a refresh only makes them cheaper again.
:func:`crlib.db.summaries.summary_state` tells how many cells were answered from live rows.
A ``proposal`` filter always reads the recorded rows (through the proposal index).

Model performance is pooled: score histograms are summed over the selected exposures and the
ROC is computed from the sums, so every valid pixel weighs the same. Histograms travel as
encoded ``bytea`` by binary COPY and are summed with numpy. TPR at a fixed FPR follows the one
definition of :mod:`crlib.metrics.roc` (:func:`~crlib.metrics.roc.interpolated_tpr`; the SQL
function ``roc_tpr_at_fpr`` computes the same numbers). The dilated TPR is reported when every
pooled exposure has dilated histograms.

By default only data the model never learnt from is pooled: exposures whose visit is in the
``test`` split of the predicting model version's training manifest or not in it at all
(``unseen``), scored against truth whose status is ``ok`` (:data:`DEFAULT_SPLITS`,
:data:`DEFAULT_TRUTH_STATUSES`); :class:`StatsFilter` widens it. Each result row says which splits,
truth statuses, model versions and scoring rules (border, DQ exclusion) it pooled.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crlib.db import copyio
from crlib.db.summaries import (
    CELLS,
    CELLS_PY,
    CR_CHIP_COLUMNS,
    PROVENANCE_KEYS,
    PooledSums,
    exposures_in,
    pending_cells,
    refresh_summaries,
    summary_state,
)
from crlib.db.vocabulary import METRIC_TRUTH_STATUSES, SPLITS, TRUSTED_TRUTH_STATUSES, UNSEEN_SPLITS
from crlib.errors import DatabaseError
from crlib.metrics.roc import interpolated_tpr, roc_points

log = logging.getLogger(__name__)

__all__ = [
    "CR_RATE_DIMENSIONS",
    "DEFAULT_SPLITS",
    "DEFAULT_TRUTH_STATUSES",
    "PERFORMANCE_DIMENSIONS",
    "PerformanceRow",
    "StatsFilter",
    "cr_rate",
    "model_performance",
    "pipeline_status",
    "pooled_roc",
    "refresh_summaries",
    "summaries_refreshed_at",
    "summary_state",
    "tpr_at_fpr",
]

DEFAULT_FPRS: tuple[float, ...] = (0.0005, 0.005)
#: Splits pooled by default: data the predicting model version never learnt from.
DEFAULT_SPLITS: tuple[str, ...] = UNSEEN_SPLITS
#: Truth statuses pooled by default (as training and ``crlib bench accuracy`` use).
DEFAULT_TRUTH_STATUSES: tuple[str, ...] = TRUSTED_TRUTH_STATUSES

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
#: Dimension name -> SQL text expression over the pooled sources (model_name, model_version, month,
#: filter, field_type, split, truth_status, border_px).
PERFORMANCE_DIMENSIONS: dict[str, str] = {
    "model": "model_name || ':' || model_version",
    "field_type": "field_type",
    "filter": "filter",
    "month": "to_char(month, 'YYYY-MM-DD')",
    "year": "date_part('year', month)::int::text",
    "split": "split",
    "truth_status": "truth_status",
    "border": "border_px::text",
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
    splits
        Model performance only: splits of the exposure's visit for the predicting model version
        (``train``, ``validation``, ``test``, ``unseen``); default :data:`DEFAULT_SPLITS` (``()``:
        every split).
    truth_statuses
        Model performance only: truth statuses the scores rest on (``ok``, ``suspect``,
        ``unknown``); default :data:`DEFAULT_TRUTH_STATUSES` (``()``: every status).
    """

    proposal_id: int | None = None
    filters: tuple[str, ...] = ()
    field_types: tuple[str, ...] = ()
    since: dt.date | None = None
    until: dt.date | None = None
    model: str | None = None
    splits: tuple[str, ...] = DEFAULT_SPLITS
    truth_statuses: tuple[str, ...] = DEFAULT_TRUTH_STATUSES

    def describe_selection(self) -> str:
        """Which scores model performance pools, in words (for the note under the output)."""
        splits = "+".join(self.splits) if self.splits else "every split"
        truth = "+".join(self.truth_statuses) if self.truth_statuses else "every truth status"
        return f"pooled: split {splits} of each model version; truth status {truth}"


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
    n_dilated
        Pooled exposures that had dilated (3x3) histograms.
    tpr_at_fpr_dilated
        ``{fpr: tpr}`` of the pooled dilated ROC; NaN unless every pooled exposure had dilated
        histograms (a partial pool would not be comparable).
    models
        Model versions pooled (``name:version``).
    splits, truth_statuses
        Splits and truth statuses of the pooled exposures.
    border_px, dq_excluded
        Scoring rules of the pooled exposures (several values: the group mixes rules).
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
    n_dilated: int = 0
    tpr_at_fpr_dilated: dict[float, float] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    truth_statuses: tuple[str, ...] = ()
    border_px: tuple[int, ...] = ()
    dq_excluded: tuple[bool, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain values for tables, CSV and JSON (ROC arrays left out)."""
        shown: dict[str, Any] = dict(self.group)
        shown.update(n_exposures=self.n_exposures, tp=self.tp, fp=self.fp, fn=self.fn, tn=self.tn)
        for fpr, tpr in self.tpr_at_fpr.items():
            shown[f"tpr_at_fpr_{fpr:g}"] = None if np.isnan(tpr) else round(tpr, 5)
        for fpr, tpr in self.tpr_at_fpr_dilated.items():
            shown[f"tpr_dilated_at_fpr_{fpr:g}"] = None if np.isnan(tpr) else round(tpr, 5)
        if "split" not in self.group:
            shown["splits"] = "+".join(self.splits)
        if "truth_status" not in self.group:
            shown["truth"] = "+".join(self.truth_statuses)
        if "border" not in self.group:
            shown["border_px"] = "+".join(str(b) for b in self.border_px)
        shown["dq_excluded"] = "+".join("yes" if d else "no" for d in self.dq_excluded)
        return shown


def pooled_roc(hist_cr: np.ndarray, hist_noncr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC from score histograms over probability bins (ascending): :func:`crlib.metrics.roc.roc_points`.

    Parameters
    ----------
    hist_cr, hist_noncr
        Counts of CR / non-CR pixels per probability bin, shape (n_bins,).

    Returns
    -------
    fpr, tpr
        Shape (n_bins + 1,): point ``k`` calls every pixel in bins ``>= k`` a CR.
        NaN where a class is empty.
    """
    return roc_points(hist_cr, hist_noncr)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at false-positive rate ``target``: :func:`crlib.metrics.roc.interpolated_tpr`."""
    return interpolated_tpr(fpr, tpr, target)


def _filter_and_field_type_clauses(
    flt: StatsFilter, params: dict[str, Any], marker: Callable[[str], str]
) -> list[str]:
    """The ``filter`` and ``field_type`` clauses of ``flt``, their values added to ``params``.

    Parameters
    ----------
    flt
        The statistics filter.
    params
        Bind parameters of the query; ``filters`` and ``field_types`` are set here when used.
    marker
        The driver's bind marker of a parameter name: ``:name`` (SQLAlchemy ``text``) or
        ``%(name)s`` (psycopg).

    Returns
    -------
    list of str
        The clauses, to be joined with ``AND``.
    """
    clauses: list[str] = []
    if flt.filters:
        clauses.append(f"filter = ANY({marker('filters')})")
        params["filters"] = [f.upper() for f in flt.filters]
    if flt.field_types:
        clauses.append(f"field_type = ANY({marker('field_types')})")
        params["field_types"] = list(flt.field_types)
    return clauses


def _where(
    flt: StatsFilter, *, month_column: str | None, date_column: str | None
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    clauses = _filter_and_field_type_clauses(flt, params, lambda name: f":{name}")
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


def _no_jit(session: Session) -> None:
    """Turn off JIT compilation for the rest of the transaction.

    At a million exposures JIT adds ~0.1 s of compiling to queries that take a few tenths of a
    second without it.
    """
    session.execute(text("SET LOCAL jit = off"))


def _cell_params(cells: Sequence[tuple[dt.date, str]]) -> dict[str, Any]:
    return {"cell_months": [c[0] for c in cells], "cell_filters": [c[1] for c in cells]}


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
    _no_jit(session)
    clause, params = _where(flt, month_column=None, date_column="obs_date")
    columns = "obs_date, filter, field_type, chip, exptime_bin_s"
    if flt.proposal_id is not None:
        source = (
            f"(SELECT {columns}, 1 AS n_chips, cr_pixels, cr_events, exptime_s, rate_exptime "
            "FROM exposure_cr_rates WHERE proposal_id = :proposal_id) AS src"
        )
        params["proposal_id"] = flt.proposal_id
    else:
        cells = pending_cells(session)
        if cells:
            # Summary rows of unchanged cells, recorded rows of the changed ones (one snapshot).
            params.update(_cell_params(cells))
            source = (
                f"(SELECT d.{columns.replace(', ', ', d.')}, d.n_chips, d.cr_pixels, d.cr_events, "
                "d.exptime_s, d.rate_exptime FROM cr_rate_daily d "
                f"WHERE NOT EXISTS (SELECT 1 FROM {CELLS} WHERE c.filter = d.filter "
                "AND c.month = date_trunc('month', d.obs_date)::date) "
                f"UNION ALL SELECT {columns}, 1, cr_pixels, cr_events, exptime_s, rate_exptime "
                f"FROM (SELECT {CR_CHIP_COLUMNS} FROM {exposures_in(CELLS)} "
                "JOIN cr_statistics s ON s.rootname = e.rootname) AS live) AS src"
            )
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


_SUMS = "n_exposures, n_dilated, tp, fp, fn, tn, hist_cr, hist_noncr, hist_cr_dilated, hist_noncr_dilated"
_LIVE_SUMS = (
    "1::bigint, (m.hist_cr_dilated IS NOT NULL)::int::bigint, "
    "m.tp, m.fp, m.fn, m.tn, m.hist_cr, m.hist_noncr, m.hist_cr_dilated, m.hist_noncr_dilated"
)
_NAMES = "JOIN model_versions v ON v.id = {t}.model_version_id JOIN models mo ON mo.id = v.model_id"
#: Columns every pooled source provides, in this order (then the sums).
_SOURCE_COLUMNS = (
    f"model_name, model_version, month, obs_date, filter, field_type, n_bins, {PROVENANCE_KEYS}, sign"
)


def _summary_source(table: str, *, sign: int, changed: str | None = None, inside: bool = False) -> str:
    """Rows of a performance summary; with ``changed``, only rows in (or outside) the changed cells."""
    monthly = table == "performance_monthly"
    restrict = ""
    if changed is not None:
        test = f"EXISTS (SELECT 1 FROM {changed} WHERE p.month = c.month AND p.filter = c.filter)"
        restrict = f" WHERE {test if inside else 'NOT ' + test}"
    return (
        f"SELECT mo.name, v.version, {'p.month' if monthly else 'NULL::date'}, NULL::date, p.filter, "
        f"p.field_type, p.n_bins, p.split, p.truth_status, p.border_px, p.dq_excluded, {sign}, {_SUMS} "
        f"FROM {table} p {_NAMES.format(t='p')}{restrict}"
    )


def _live_source(rows: str) -> str:
    """Recorded metrics of the exposures ``e`` in ``rows`` (a FROM item)."""
    return (
        "SELECT mo.name, v.version, date_trunc('month', e.obs_date)::date, e.obs_date, e.filter, "
        "COALESCE(m.field_type, e.field_type, 'unknown'), m.n_bins, m.split, m.truth_status, m.border_px, "
        f"m.dq_excluded, 1, {_LIVE_SUMS} FROM {rows} "
        f"JOIN exposure_metrics m ON m.rootname = e.rootname {_NAMES.format(t='m')}"
    )


def _performance_sources(session: Session, flt: StatsFilter, *, dated: bool, params: dict[str, Any]) -> str:
    """``UNION ALL`` of the pooled sources (columns :data:`_SOURCE_COLUMNS` and the sums).

    Without a proposal: the monthly summary outside changed cells (``dated``), or the totals
    minus the stale monthly rows of changed cells; plus the recorded rows of changed cells.
    """
    if flt.proposal_id is not None:
        params["proposal_id"] = flt.proposal_id
        return _live_source("exposures e") + " WHERE e.proposal_id = %(proposal_id)s"
    cells = pending_cells(session)
    params.update(_cell_params(cells))
    changed = CELLS_PY if cells else None
    if dated:
        sources = [_summary_source("performance_monthly", sign=1, changed=changed)]
    else:
        sources = [_summary_source("performance_total", sign=1)]
        if changed:
            sources.append(_summary_source("performance_monthly", sign=-1, changed=changed, inside=True))
    if changed:
        sources.append(_live_source(exposures_in(CELLS_PY)))
    return " UNION ALL ".join(f"({source})" for source in sources)


def _performance_where(flt: StatsFilter, params: dict[str, Any]) -> str:
    clauses = _filter_and_field_type_clauses(flt, params, lambda name: f"%({name})s")
    if flt.splits:
        clauses.append("split = ANY(%(splits)s)")
        params["splits"] = list(flt.splits)
    if flt.truth_statuses:
        clauses.append("truth_status = ANY(%(truth_statuses)s)")
        params["truth_statuses"] = list(flt.truth_statuses)
    if flt.model:
        name, _, version = flt.model.partition(":")
        clauses.append("model_name = %(model_name)s")
        params["model_name"] = name
        if version:
            clauses.append("model_version = %(model_version)s")
            params["model_version"] = version
    # A proposal's rows carry their dates; summaries match whole months.
    column = "obs_date" if flt.proposal_id is not None else "month"
    if flt.since is not None:
        clauses.append(f"{column} >= %(since)s")
        params["since"] = flt.since if flt.proposal_id is not None else flt.since.replace(day=1)
    if flt.until is not None:
        clauses.append(f"{column} <= %(until)s")
        params["until"] = flt.until
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def model_performance(
    session: Session,
    *,
    by: Sequence[str] = ("model", "field_type", "filter"),
    where: StatsFilter | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    dilated: bool = True,
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
    dilated
        Also pool the dilated histograms (``tpr_at_fpr_dilated``); ``False`` moves half the bytes.
    """
    flt = where or StatsFilter()
    dims = _dimensions(by, PERFORMANCE_DIMENSIONS)
    _no_jit(session)
    dated = flt.since is not None or flt.until is not None or bool({"month", "year"} & set(by))
    params: dict[str, Any] = {}
    union = _performance_sources(session, flt, dated=dated, params=params)
    clause = _performance_where(flt, params)
    keys = [f"{expr} AS {name}" for name, expr in dims]
    wanted = _SUMS if dilated else _SUMS.replace("hist_cr_dilated, hist_noncr_dilated", "NULL, NULL")
    provenance = f"model_name || ':' || model_version, {PROVENANCE_KEYS}"
    query = (
        f"SELECT {', '.join([*keys, 'n_bins', provenance, 'sign', wanted])} "
        f"FROM ({union}) AS src({_SOURCE_COLUMNS}, {_SUMS}){clause}"
    )
    width = len(dims)
    # Pooled per group and provenance (model version, split, truth status, scoring rules), so each
    # result can say what it pooled; a provenance whose sums cancel out (stale summary rows
    # subtracted) leaves no trace.
    pooled: dict[tuple, PooledSums] = {}

    def on_row(f: copyio.Row) -> None:
        n_bins = int(copyio.int_value(f[width]) or 0)
        key = (
            *(copyio.text_value(v) for v in f[:width]),
            n_bins,
            copyio.text_value(f[width + 1]),
            copyio.text_value(f[width + 2]),
            copyio.text_value(f[width + 3]),
            int(copyio.int_value(f[width + 4]) or 0),
            bool(copyio.bool_value(f[width + 5])),
        )
        entry = pooled.get(key)
        if entry is None:
            entry = pooled[key] = PooledSums(n_bins)
        counts = [int(copyio.int_value(v) or 0) for v in f[width + 7 : width + 13]]
        entry.add(
            counts[0],
            counts[1],
            counts[2:],
            f[width + 13 : width + 17],
            sign=int(copyio.int_value(f[width + 6]) or 1),
        )

    copyio.copy_out(session, query, params, on_row)
    groups: dict[tuple, tuple[PooledSums, list[tuple]]] = {}
    for key, sums in pooled.items():
        if sums.n_exposures <= 0:
            continue
        group_key, origin = key[: width + 1], key[width + 1 :]
        if group_key not in groups:
            groups[group_key] = (PooledSums(sums.n_bins), [])
        groups[group_key][0].merge(sums)
        groups[group_key][1].append(origin)
    results = []
    for key in sorted(groups, key=lambda k: (*("" if v is None else v for v in k[:-1]), k[-1])):
        sums, origins = groups[key]
        fpr, tpr = pooled_roc(sums.hists[0], sums.hists[1])
        if dilated and sums.n_dilated == sums.n_exposures:
            d_fpr, d_tpr = pooled_roc(sums.hists[2], sums.hists[3])
            dilated_tpr = {f: tpr_at_fpr(d_fpr, d_tpr, f) for f in fprs}
        else:
            dilated_tpr = dict.fromkeys(fprs, float("nan")) if dilated else {}
        group = {name: _group_value(name, value) for (name, _), value in zip(dims, key, strict=False)}
        tp, fp, fn, tn = sums.counts
        results.append(
            PerformanceRow(
                group=group,
                n_exposures=sums.n_exposures,
                tp=tp,
                fp=fp,
                fn=fn,
                tn=tn,
                tpr_at_fpr={f: tpr_at_fpr(fpr, tpr, f) for f in fprs},
                fpr=fpr,
                tpr=tpr,
                n_dilated=sums.n_dilated,
                tpr_at_fpr_dilated=dilated_tpr,
                models=tuple(sorted({o[0] for o in origins})),
                splits=tuple(s for s in SPLITS if s in {o[1] for o in origins}),
                truth_statuses=tuple(s for s in METRIC_TRUTH_STATUSES if s in {o[2] for o in origins}),
                border_px=tuple(sorted({o[3] for o in origins})),
                dq_excluded=tuple(sorted({o[4] for o in origins})),
            )
        )
    return results


def _group_value(name: str, value: str | None) -> Any:
    if name in ("year", "border") and value is not None:
        return int(value)
    return value


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


def summaries_refreshed_at(session: Session) -> dict[str, dt.datetime | None]:
    """When each summary table was last refreshed (``None``: never)."""
    return summary_state(session).refreshed_at
