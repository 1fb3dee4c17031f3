"""``crlib bench db``'s recording comparison: every method writes the same rows, all are reported."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from crlib.bench.database import (
    FAIR_BASELINES,
    RECORD_METHODS,
    RecordMethod,
    _insert_batch,
    compare_recording,
    recording_ratios,
    run_db_benchmark,
)
from crlib.bench.metric_archive import generate_archive, synthetic_metrics
from crlib.db.model_registry import record_model_version

BINS = 64


@pytest.fixture
def archive_sessions(sessions: Any) -> Any:
    """Sessions on a database holding 40 generated exposures (and their metrics, version 1)."""
    with sessions() as session:
        version_id = record_model_version(
            session, model_name="deepcr-acs-wfc", version="1", source="deepcr_package"
        )
        session.commit()
    with sessions() as session:
        generate_archive(session, exposures=40, bins=BINS, model_version_id=version_id)
    return sessions


def _rootnames(sessions: Any, n: int) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(text("SELECT rootname FROM exposures ORDER BY rootname LIMIT :n"), {"n": n})
        )


def test_every_method_stores_exactly_the_same_rows(archive_sessions: Any) -> None:
    rootnames = _rootnames(archive_sessions, 12)
    batch = synthetic_metrics(rootnames, bins=BINS, model_version="x", seed=3)
    stored: dict[str, list[tuple[Any, ...]]] = {}
    for method in RECORD_METHODS:
        version = f"same-{method}"
        with archive_sessions() as session:
            version_id = record_model_version(
                session, model_name="deepcr-acs-wfc", version=version, source="mlflow"
            )
            session.commit()
        import dataclasses

        rows = [dataclasses.replace(m, model_version=version) for m in batch]
        with archive_sessions() as session:
            _insert_batch(session, method, rows, version_id)
        with archive_sessions() as session:
            stored[method] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in session.execute(
                    text(
                        "SELECT rootname, field_type, tp, fp, fn, tn, tpr_at_fpr, tpr_at_fpr_dilated, "
                        "n_bins, hist_cr, hist_noncr, hist_cr_dilated, hist_noncr_dilated "
                        "FROM exposure_metrics "
                        "WHERE model_version_id = :id ORDER BY rootname"
                    ),
                    {"id": version_id},
                )
            ]
    assert len(stored["copy"]) == len(rootnames)
    for method, rows in stored.items():
        assert rows == stored["copy"], method


def test_compare_recording_times_every_method_on_the_same_rows_and_cleans_up(archive_sessions: Any) -> None:
    rootnames = _rootnames(archive_sessions, 20)
    with archive_sessions() as session:
        before = session.execute(text("SELECT count(*) FROM exposure_metrics")).scalar_one()
    results = compare_recording(archive_sessions, rootnames, bins=BINS, repeat=2, per_row_cap=8)
    assert list(results) == list(RECORD_METHODS)
    for name, method in results.items():
        assert len(method.samples) == 2 and all(rate > 0 for rate in method.samples), name
        assert method.rows == (8 if name == "orm_per_row" else 20)
        assert method.label == RECORD_METHODS[name]
    with archive_sessions() as session:  # the timed rows are deleted again: every sample starts alike
        assert session.execute(text("SELECT count(*) FROM exposure_metrics")).scalar_one() == before
    ratios = recording_ratios(results)
    assert set(ratios) == {f"copy_over_{m}" for m in RECORD_METHODS if m != "copy"}
    assert set(FAIR_BASELINES) <= {m.removeprefix("copy_over_") for m in ratios}


def test_ratios_are_medians_over_repetitions() -> None:
    methods = {
        "copy": RecordMethod("c", 10, [100.0, 300.0, 200.0]),
        "execute_values": RecordMethod("e", 10, [50.0, 100.0, 400.0]),
    }
    assert methods["copy"].rows_per_s == 200.0
    assert recording_ratios(methods) == {"copy_over_execute_values": 2.0}
    assert recording_ratios({"execute_values": methods["execute_values"]}) == {}


def test_unknown_method_is_refused(archive_sessions: Any) -> None:
    with pytest.raises(ValueError, match="unknown recording methods"):
        compare_recording(archive_sessions, _rootnames(archive_sessions, 2), bins=BINS, methods=("bulk",))


def test_benchmark_report_carries_both_baselines(engine: Any) -> None:
    report = run_db_benchmark(engine, exposures=200, bins=BINS, record_rows=16, repeat=1, record_repeats=2)
    assert set(report.record_methods) == set(RECORD_METHODS)
    assert report.record_rows == 16
    assert report.record_rows_per_s == report.record_methods["copy"].rows_per_s > 0
    assert report.reference_rows_per_s == report.record_methods["orm_per_row"].rows_per_s > 0
    assert {"copy_over_orm_per_row", "copy_over_execute_values", "copy_over_core_executemany"} <= set(
        report.record_ratios
    )
    assert report.rerecord_rows_per_s > 0 and report.single_row_calls_per_s > 0
