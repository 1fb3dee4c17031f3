"""Statistics queries: CR rates and pooled model performance agree with sums over the recorded records."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crlib.db.stats import StatsFilter, cr_rate, model_performance, pooled_roc, refresh_summaries, tpr_at_fpr


@pytest.fixture
def archive(factory: Any, sessions: Any) -> dict[str, Any]:
    """Two visits in different proposals, filters, field types, months and exposure times."""
    a = factory.visit_records("jbt122", proposal_id=10775, mjd=55000.25, seed=1)
    b = factory.visit_records(
        "jc4a01",
        proposal_id=12000,
        filter_name="F814W",
        field_type="extragalactic",
        mjd=56000.5,
        exptime_s=1200.0,
        seed=2,
    )
    with sessions() as session:
        factory.record_visit(session, a)
        factory.record_visit(session, b)
        refresh_summaries(session)
    return {"a": a, "b": b}


def _expected_rate(stats: list[Any]) -> float:
    return sum(s.rate_per_cm2_s * s.exptime_s for s in stats) / sum(s.exptime_s for s in stats)


def test_cr_rate_by_filter_matches_the_records(sessions: Any, archive: dict[str, Any]) -> None:
    with sessions() as session:
        rows = {r["filter"]: r for r in cr_rate(session, by=("filter",))}
    for key, name in (("a", "F606W"), ("b", "F814W")):
        stats = archive[key]["statistics"]
        assert rows[name]["n_chips"] == len(stats)
        assert rows[name]["cr_events"] == sum(s.cr_events for s in stats)
        assert rows[name]["rate_per_cm2_s"] == pytest.approx(_expected_rate(stats), abs=1e-5)


def test_cr_rate_by_month_chip_and_exptime(sessions: Any, archive: dict[str, Any]) -> None:
    with sessions() as session:
        months = [r["month"] for r in cr_rate(session, by=("month",))]
        chips = {r["chip"]: r["cr_events"] for r in cr_rate(session, by=("chip",))}
        bins = {r["exptime"]: r["n_chips"] for r in cr_rate(session, by=("exptime",))}
    assert months == [dt.date(2009, 6, 1), dt.date(2012, 3, 1)]
    every = archive["a"]["statistics"] + archive["b"]["statistics"]
    assert chips == {c: sum(s.cr_events for s in every if s.chip == c) for c in (1, 2)}
    assert bins == {300.0: 6, 1000.0: 6}


def test_filters_and_proposal_path_agree_with_summary(sessions: Any, archive: dict[str, Any]) -> None:
    with sessions() as session:
        by_proposal = cr_rate(session, by=("chip",), where=StatsFilter(proposal_id=12000))
        by_filter = cr_rate(session, by=("chip",), where=StatsFilter(filters=("f814w",)))
        dated = cr_rate(session, by=("filter",), where=StatsFilter(since=dt.date(2010, 1, 1)))
        typed = cr_rate(session, by=("filter",), where=StatsFilter(field_types=("globular_cluster",)))
    assert by_proposal == by_filter
    assert [r["filter"] for r in dated] == ["F814W"]
    assert [r["filter"] for r in typed] == ["F606W"]


def test_pooled_performance_equals_roc_of_summed_histograms(sessions: Any, archive: dict[str, Any]) -> None:
    with sessions() as session:
        results = model_performance(session)
        by_proposal = model_performance(session, where=StatsFilter(proposal_id=10775))
    assert {(r.group["filter"], r.group["field_type"]) for r in results} == {
        ("F814W", "extragalactic"),
        ("F606W", "globular_cluster"),
    }
    for result in results:
        key = "a" if result.group["filter"] == "F606W" else "b"
        metrics = archive[key]["metrics"]
        hist_cr = np.sum([m.hist_cr for m in metrics], axis=0)
        hist_noncr = np.sum([m.hist_noncr for m in metrics], axis=0)
        fpr, tpr = pooled_roc(hist_cr, hist_noncr)
        assert result.group["model"] == "deepcr-acs-wfc:1"
        assert result.n_exposures == 3
        assert result.tp == sum(m.tp for m in metrics)
        for target in (0.0005, 0.005):
            assert result.tpr_at_fpr[target] == pytest.approx(tpr_at_fpr(fpr, tpr, target))
        np.testing.assert_allclose(result.tpr, tpr)
    assert len(by_proposal) == 1
    assert by_proposal[0].group["filter"] == "F606W"
    assert by_proposal[0].tpr_at_fpr == next(r for r in results if r.group["filter"] == "F606W").tpr_at_fpr


def test_performance_by_month_and_model_filter(sessions: Any, archive: dict[str, Any]) -> None:
    with sessions() as session:
        monthly = model_performance(session, by=("model", "month"))
        other_model = model_performance(session, where=StatsFilter(model="deepcr-wfc3-uvis"))
        exact = model_performance(session, by=("model",), where=StatsFilter(model="deepcr-acs-wfc:1"))
    assert [r.group["month"] for r in monthly] == ["2009-06-01", "2012-03-01"]
    assert other_model == []
    assert exact[0].n_exposures == 6


def test_pooled_roc_by_hand() -> None:
    fpr, tpr = pooled_roc(np.array([0, 0, 1, 3]), np.array([90, 8, 2, 0]))
    np.testing.assert_allclose(tpr, [1, 1, 1, 0.75, 0])
    np.testing.assert_allclose(fpr, [1, 0.1, 0.02, 0, 0])
    assert tpr_at_fpr(fpr, tpr, 0.01) == pytest.approx(0.875)


def test_summaries_need_refresh_to_see_new_records(factory: Any, sessions: Any) -> None:
    with sessions() as session:
        factory.record_visit(session, factory.visit_records())
        assert cr_rate(session, by=("filter",)) == []
        refresh_summaries(session)
        assert cr_rate(session, by=("filter",))[0]["n_chips"] == 6


QUERIES = sorted((Path(__file__).resolve().parents[2] / "sql" / "queries").glob("*.sql"))


@pytest.mark.parametrize("query", QUERIES, ids=[q.stem for q in QUERIES])
def test_example_queries_run_on_recorded_results(sessions: Any, archive: dict[str, Any], query: Path) -> None:
    from sqlalchemy import text

    with sessions() as session:
        session.execute(
            text(
                "INSERT INTO pipeline_runs (run_id, dag_id, trigger, status, started_at) "
                "VALUES ('r1', 'crlib_nightly_ingest', 'scheduled', 'success', now())"
            )
        )
        session.execute(
            text(
                "INSERT INTO model_alias_history (model_id, alias, model_version_id) "
                "SELECT model_id, 'champion', id FROM model_versions"
            )
        )
        rows = session.execute(text(query.read_text())).mappings().all()
    assert rows, f"{query.name} returned nothing on a recorded archive"
    for row in rows:
        for key, value in row.items():
            if key.startswith("tpr") and value is not None:
                assert 0.0 <= float(value) <= 1.0


def test_sql_pooled_tpr_agrees_with_python_at_bin_edges(sessions: Any, archive: dict[str, Any]) -> None:
    from sqlalchemy import text

    query = next(q for q in QUERIES if q.stem == "model_performance_pooled")
    with sessions() as session:
        rows = {r["filter"]: r for r in session.execute(text(query.read_text())).mappings()}
    metrics = archive["a"]["metrics"]
    fpr, tpr = pooled_roc(
        np.sum([m.hist_cr for m in metrics], axis=0), np.sum([m.hist_noncr for m in metrics], axis=0)
    )
    expected = max(t for f, t in zip(fpr, tpr, strict=True) if f <= 0.005)
    assert rows["F606W"]["tpr_at_fpr_005"] == pytest.approx(expected)
