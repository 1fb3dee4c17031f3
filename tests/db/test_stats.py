"""Statistics queries: CR rates and pooled model performance agree with sums over the recorded records."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from crlib.db import repo
from crlib.db.stats import (
    StatsFilter,
    cr_rate,
    model_performance,
    pooled_roc,
    refresh_summaries,
    summary_state,
    tpr_at_fpr,
)


@pytest.fixture(params=["refreshed", "live"])
def archive(factory: Any, sessions: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Two visits in different proposals, filters, field types, months and exposure times.

    ``refreshed``: the summaries were refreshed after recording; ``live``: never refreshed, so
    every answer comes from the recorded rows of the changed cells (they must agree).
    """
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
        if request.param == "refreshed":
            refresh_summaries(session)
            assert summary_state(session).pending_cells == 0
        else:
            assert summary_state(session).pending_cells == 2
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


def _performance(session: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return [r.as_dict() for r in model_performance(session, **kwargs)]


def _every_answer(session: Any) -> dict[str, Any]:
    return {
        "rate_filter": cr_rate(session, by=("filter", "chip")),
        "rate_month": cr_rate(session, by=("month", "field_type", "exptime")),
        "perf": _performance(session),
        "perf_month": _performance(session, by=("model", "month", "filter")),
        "perf_year": _performance(session, by=("year",), where=StatsFilter(since=dt.date(2009, 1, 1))),
    }


def test_answers_are_exact_before_and_after_refresh_and_after_rerecording(
    factory: Any, sessions: Any
) -> None:
    a = factory.visit_records("jbt122", seed=1)
    b = factory.visit_records("jc4a01", proposal_id=12000, filter_name="F814W", mjd=56000.5, seed=2)
    with sessions() as session:
        factory.record_visit(session, a)
        factory.record_visit(session, b)
        live = _every_answer(session)
        assert live["rate_filter"] and live["perf"]
        assert refresh_summaries(session).keys() == {
            "cr_rate_daily",
            "performance_monthly",
            "performance_total",
        }
        assert summary_state(session).pending_cells == 0
        assert _every_answer(session) == live
        # Re-recording one exposure's metrics and CR statistics: answers change at once.
        changed = dataclasses.replace(a["metrics"][0], tp=a["metrics"][0].tp + 1000, hist_cr=(0,) * 16)
        repo.record_metrics(session, [changed])
        stats = [dataclasses.replace(s, cr_events=s.cr_events + 7) for s in a["statistics"][:2]]
        repo.record_cr_statistics(session, stats)
        assert summary_state(session).pending_cells == 1
        before_refresh = _every_answer(session)
        assert before_refresh != live
        f606w = next(r for r in before_refresh["perf"] if r["filter"] == "F606W")
        assert f606w["tp"] == sum(m.tp for m in a["metrics"]) + 1000
        rates = {(r["filter"], r["chip"]): r["cr_events"] for r in before_refresh["rate_filter"]}
        assert rates[("F606W", 1)] == sum(s.cr_events for s in a["statistics"] if s.chip == 1) + 7
        refresh_summaries(session, concurrently=False)
        assert _every_answer(session) == before_refresh
        refresh_summaries(session, full=True)
        assert _every_answer(session) == before_refresh


def test_moving_an_exposure_to_another_filter_moves_its_statistics(factory: Any, sessions: Any) -> None:
    records = factory.visit_records()
    with sessions() as session:
        factory.record_visit(session, records)
        refresh_summaries(session)
        moved = dataclasses.replace(records["observations"][0], filter="F814W")
        repo.record_observations(session, [moved])
        chips = {r["filter"]: r["n_chips"] for r in cr_rate(session, by=("filter",))}
        perf = {r["filter"]: r["n_exposures"] for r in _performance(session, by=("filter",))}
        assert chips == {"F606W": 4, "F814W": 2}
        assert perf == {"F606W": 2, "F814W": 1}
        refresh_summaries(session)
        assert {r["filter"]: r["n_chips"] for r in cr_rate(session, by=("filter",))} == chips
        assert {r["filter"]: r["n_exposures"] for r in _performance(session, by=("filter",))} == perf
        session.execute(text("DELETE FROM exposures WHERE rootname = :r"), {"r": moved.rootname})
        session.commit()
        assert {r["filter"]: r["n_chips"] for r in cr_rate(session, by=("filter",))} == {"F606W": 4}
        refresh_summaries(session)
        assert [r["n_exposures"] for r in _performance(session, by=("filter",))] == [2]


def test_dilated_tpr_is_pooled_only_when_every_exposure_has_dilated_histograms(
    factory: Any, sessions: Any
) -> None:
    with_dilated = factory.visit_records("jbt122", seed=4)
    without = factory.visit_records("jbt123", seed=5, dilated=False, mjd=55000.5)
    with sessions() as session:
        factory.record_visit(session, with_dilated)
        (row,) = model_performance(session, by=("filter",))
        metrics = with_dilated["metrics"]
        fpr, tpr = pooled_roc(
            np.sum([m.hist_cr_dilated for m in metrics], axis=0),
            np.sum([m.hist_noncr_dilated for m in metrics], axis=0),
        )
        assert row.n_dilated == 3
        assert row.tpr_at_fpr_dilated[0.005] == pytest.approx(tpr_at_fpr(fpr, tpr, 0.005))
        factory.record_visit(session, without)
        refresh_summaries(session)
        (row,) = model_performance(session, by=("filter",))
        assert (row.n_exposures, row.n_dilated) == (6, 3)
        assert np.isnan(row.tpr_at_fpr_dilated[0.005])
        assert row.as_dict()["tpr_dilated_at_fpr_0.005"] is None


QUERIES = sorted((Path(__file__).resolve().parents[2] / "sql" / "queries").glob("*.sql"))


@pytest.mark.parametrize("query", QUERIES, ids=[q.stem for q in QUERIES])
def test_example_queries_run_on_recorded_results(sessions: Any, archive: dict[str, Any], query: Path) -> None:
    with sessions() as session:
        refresh_summaries(session)  # SQL users read the summary tables as they are
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
