"""One TPR-at-FPR definition: SQL ``roc_tpr_at_fpr`` equals ``crlib.metrics.roc`` exactly.

Exactly means ``==`` on the float64 values (NaN in Python where SQL returns NULL): the SQL
function performs the same IEEE double operations on the same integer sums.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from crlib.metrics.roc import roc_points, tpr_at_fpr_from_histograms

#: ROC points share FPRs (bins with CR pixels and no non-CR pixel): FPR 0.005 carries TPR 0.15,
#: 0.40 and 0.70. The three rules crlib used before disagreed here (docs/metrics.md).
TIE_CR = [10, 20, 30, 25, 5, 10]
TIE_NONCR = [9900, 50, 0, 0, 40, 10]
TIE_EXPECTED = {0.003: 0.125, 0.005: 0.70, 0.007: 0.78, 0.001: 0.10, 0.0: 0.0, 1.0: 1.0}


def _sql(session: Any, hist_cr: Any, hist_noncr: Any, targets: list[float]) -> list[float]:
    rows = session.execute(
        text(
            "SELECT roc_tpr_at_fpr(CAST(:cr AS bigint[]), CAST(:noncr AS bigint[]), t) "
            "FROM unnest(CAST(:targets AS float8[])) WITH ORDINALITY AS u(t, i) ORDER BY i"
        ),
        {"cr": [int(v) for v in hist_cr], "noncr": [int(v) for v in hist_noncr], "targets": targets},
    ).scalars()
    return [math.nan if v is None else float(v) for v in rows]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_tie_case_follows_the_roc_polyline_in_python_and_sql(sessions: Any) -> None:
    targets = list(TIE_EXPECTED)
    python = [tpr_at_fpr_from_histograms(TIE_CR, TIE_NONCR, t) for t in targets]
    with sessions() as session:
        sql = _sql(session, TIE_CR, TIE_NONCR, targets)
    assert python == sql
    assert python == pytest.approx(list(TIE_EXPECTED.values()), abs=1e-12)


def _random_set(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Sparse histograms (many shared FPRs), sometimes an empty class; targets on and between points."""
    n_bins = int(rng.integers(1, 80))
    scale = 10 ** rng.integers(0, 7)
    cr = rng.integers(0, scale + 1, n_bins) * (rng.random(n_bins) < 0.6)
    noncr = rng.integers(0, 10 * scale + 1, n_bins) * (rng.random(n_bins) < 0.4)
    if rng.random() < 0.05:
        cr[:] = 0
    fpr, _ = roc_points(cr, noncr)
    targets = [0.0005, 0.005, 0.0, 1.0, *rng.random(4).tolist(), *(10 ** rng.uniform(-6, 0, 4)).tolist()]
    points = fpr[np.isfinite(fpr)]
    if points.size:
        targets += rng.choice(points, size=min(4, points.size)).tolist()  # exactly on shared FPRs
    return cr, noncr, targets


def test_python_and_sql_agree_exactly_on_100_random_histogram_sets(sessions: Any) -> None:
    rng = np.random.default_rng(20261204)
    compared = nan = 0
    with sessions() as session:
        for _ in range(100):
            cr, noncr, targets = _random_set(rng)
            python = [tpr_at_fpr_from_histograms(cr, noncr, t) for t in targets]
            sql = _sql(session, cr, noncr, targets)
            assert all(_same(a, b) for a, b in zip(python, sql, strict=True)), (
                cr,
                noncr,
                targets,
                python,
                sql,
            )
            compared += len(targets)
            nan += sum(math.isnan(v) for v in python)
    assert compared > 1000 and 0 < nan < compared / 5


def test_stats_performance_equals_the_sql_function_on_the_reader_view(factory: Any, sessions: Any) -> None:
    from crlib.db.stats import model_performance, refresh_summaries

    with sessions() as session:
        factory.record_visit(session, factory.visit_records("jbt122", seed=1))
        factory.record_visit(
            session, factory.visit_records("jc4a01", filter_name="F814W", mjd=56000.5, seed=2, bins=40)
        )
        refresh_summaries(session)
        sql = {
            row.filter: (row.low, row.high)
            for row in session.execute(
                text(
                    "SELECT filter, roc_tpr_at_fpr(hist_cr, hist_noncr, 0.0005) AS low, "
                    "roc_tpr_at_fpr(hist_cr, hist_noncr, 0.005) AS high FROM model_performance_total"
                )
            )
        }
        python = {
            r.group["filter"]: (r.tpr_at_fpr[0.0005], r.tpr_at_fpr[0.005])
            for r in model_performance(session, by=("filter",))
        }
    assert python == sql and len(sql) == 2


EXAMPLE = Path(__file__).resolve().parents[2] / "sql" / "queries" / "model_performance_pooled.sql"


def test_example_pooled_query_gives_what_crlib_stats_gives(factory: Any, sessions: Any) -> None:
    from crlib.db.stats import model_performance, refresh_summaries

    with sessions() as session:
        factory.record_visit(session, factory.visit_records("jbt122", seed=1))
        refresh_summaries(session)
        rows = session.execute(text(EXAMPLE.read_text())).mappings().all()
        (python,) = model_performance(session)
    assert [(r["tpr_at_fpr_0005"], r["tpr_at_fpr_005"]) for r in rows] == [
        (python.tpr_at_fpr[0.0005], python.tpr_at_fpr[0.005])
    ]
