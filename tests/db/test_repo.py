"""Recording stage results: idempotent upserts, whole-stage atomicity, bad values rejected by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from crlib.db import repo
from crlib.errors import DatabaseError


def test_recording_a_visit_twice_gives_the_same_rows(factory: Any, sessions: Any) -> None:
    records = factory.visit_records()
    with sessions() as session:
        factory.record_visit(session, records)
        first = factory.table_counts(session)
        factory.record_visit(session, records)
        assert factory.table_counts(session) == first
    assert first["exposures"] == 3
    assert first["screening_reasons"] == 2
    assert first["truth_chips"] == 6
    assert first["cr_statistics"] == 6
    assert first["exposure_metrics"] == 3


def test_rerun_replaces_child_rows_and_values(factory: Any, sessions: Any) -> None:
    records = factory.visit_records()
    with sessions() as session:
        factory.record_visit(session, records)
        # Screening re-run: the first exposure now passes, its reasons disappear.
        accepted = dataclasses.replace(records["verdicts"][0], verdict="accept", reasons=())
        repo.record_screening(session, [accepted])
        # Truth re-run with one chip only: the old chip 2 row must go.
        truth = dataclasses.replace(
            records["truths"][0], chips=records["truths"][0].chips[:1], status="suspect"
        )
        repo.record_truth(session, truth)
        metric = dataclasses.replace(records["metrics"][0], tp=7)
        repo.record_metrics(session, [metric])
        rootname = records["observations"][0].rootname
        assert session.execute(text("SELECT count(*) FROM screening_reasons")).scalar_one() == 0
        assert (
            session.execute(
                text("SELECT verdict FROM screening_verdicts WHERE rootname = :r"), {"r": rootname}
            ).scalar_one()
            == "accept"
        )
        chips = (
            session.execute(
                text("SELECT chip FROM truth_chips WHERE rootname = :r ORDER BY chip"), {"r": rootname}
            )
            .scalars()
            .all()
        )
        assert chips == [1]
        stored = session.execute(
            text(
                "SELECT tp, hist_decode(hist_cr, n_bins) AS hist_cr FROM exposure_metrics WHERE rootname = :r"
            ),
            {"r": rootname},
        ).one()
        assert stored.tp == 7
        assert stored.hist_cr == list(metric.hist_cr)


def test_screening_reasons_and_header_summary_are_kept(factory: Any, sessions: Any) -> None:
    records = factory.visit_records()
    with sessions() as session:
        factory.record_visit(session, records)
        rows = session.execute(
            text("SELECT rule, keyword, value, severity FROM screening_reasons ORDER BY position")
        ).all()
        summary = session.execute(
            text("SELECT header_summary FROM exposures WHERE rootname = :r"),
            {"r": records["observations"][0].rootname},
        ).scalar_one()
    assert [(r.rule, r.keyword, r.value, r.severity) for r in rows] == [
        ("min_exptime", "EXPTIME", 5.0, "reject"),
        ("gyro_mode", "GYROMODE", "T", "warning"),
    ]
    assert summary == {"EXPTIME": 500.0, "FILTER1": "F606W"}


def test_acs_two_wheel_filter_is_normalised(factory: Any, sessions: Any) -> None:
    observation = dataclasses.replace(factory.visit_records()["observations"][0], filter="F606W;CLEAR2L")
    with sessions() as session:
        repo.record_observations(session, [observation])
        assert session.execute(text("SELECT filter FROM exposures")).scalar_one() == "F606W"


def _replace_first(records: dict[str, Any], key: str, **changes: Any) -> Any:
    return dataclasses.replace(records[key][0], **changes)


@pytest.mark.parametrize(
    ("stage", "changes", "field"),
    [
        ("observations", {"filter": "F999Z"}, "exposures.filter"),
        ("observations", {"target_name": "x" * 300}, "exposures.target_name"),
        ("observations", {"exptime_s": float("nan")}, "exposures.exptime_s"),
        ("observations", {"field_type": "spiral_arm"}, "exposures.field_type"),
        ("observations", {"field_type_method": "guess"}, "exposures.field_type_method"),
        ("observations", {"field_type_method": None}, "exposures.field_type_method"),
        ("metrics", {"tpr_at_fpr": {"0.0005": float("nan")}}, "exposure_metrics.tpr_at_fpr"),
        ("metrics", {"tpr_at_fpr_dilated": {"0.005": 1.5}}, "exposure_metrics.tpr_at_fpr_dilated"),
        ("metrics", {"tp": -1}, "exposure_metrics.tp"),
        ("metrics", {"hist_cr": (1, 2)}, "exposure_metrics.hist_noncr"),
        ("metrics", {"hist_noncr": tuple([-1] * 16)}, "exposure_metrics.hist_noncr"),
        ("metrics", {"hist_cr": (float("nan"),) * 16}, "exposure_metrics.hist_cr"),
        ("metrics", {"hist_cr": (0.5,) * 16}, "exposure_metrics.hist_cr"),
        ("metrics", {"hist_cr": ("12",) * 16}, "exposure_metrics.hist_cr"),
        ("metrics", {"hist_cr_dilated": (2**70,) * 16}, "exposure_metrics.hist_cr_dilated"),
        ("metrics", {"hist_noncr_dilated": ()}, "exposure_metrics.hist_noncr_dilated"),
        ("metrics", {"tn": float("nan")}, "exposure_metrics.tn"),
        ("metrics", {"field_type": "spiral_arm"}, "exposure_metrics.field_type"),
        ("metrics", {"rootname": "jbt12200q-and-much-more"}, "exposure_metrics.rootname"),
        ("metrics", {"model_version": "v" * 65}, "model_versions.version"),
        ("observations", {"rootname": "jbt1220000000q"}, "exposures.rootname"),
        ("observations", {"product_uri": "mast:" + "x" * 2000}, "exposures.product_uri"),
        ("predictions", {"seconds": float("inf")}, "predictions.seconds"),
        ("predictions", {"device": "cuda:" + "0" * 64}, "predictions.device"),
        ("statistics", {"rate_per_cm2_s": float("nan")}, "cr_statistics.rate_per_cm2_s"),
        ("statistics", {"cr_events": -3}, "cr_statistics.cr_events"),
        ("statistics", {"chip": 0}, "cr_statistics.chip"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    factory: Any, sessions: Any, stage: str, changes: dict[str, Any], field: str
) -> None:
    records = factory.visit_records()
    with sessions() as session:
        if stage != "observations":
            repo.record_observations(session, records["observations"])
        before = factory.table_counts(session)
        bad = _replace_first(records, stage, **changes)
        recorders: dict[str, Callable[[Any, Any], Any]] = {
            "observations": repo.record_observations,
            "metrics": repo.record_metrics,
            "predictions": repo.record_predictions,
            "statistics": repo.record_cr_statistics,
        }
        recorder = recorders[stage]
        with pytest.raises(DatabaseError, match=field.replace(".", r"\.")):
            recorder(session, [*records[stage][1:], bad])
        assert factory.table_counts(session) == before


def test_truth_valid_fraction_above_one_is_rejected(factory: Any, sessions: Any) -> None:
    from crlib.records import ChipTruth

    records = factory.visit_records()
    with sessions() as session:
        repo.record_observations(session, records["observations"])
        bad = dataclasses.replace(records["truths"][0], chips=(ChipTruth(1, 10, 2, 1.2),))
        with pytest.raises(DatabaseError, match=r"truth_chips\.valid_fraction"):
            repo.record_truth(session, bad)
        assert session.execute(text("SELECT count(*) FROM truth_results")).scalar_one() == 0


def test_database_constraints_reject_what_bypasses_the_repository(factory: Any, sessions: Any) -> None:
    from crlib.db.validation import translated_errors

    records = factory.visit_records()
    with sessions() as session:
        repo.record_observations(session, records["observations"])
        rootname = records["observations"][0].rootname
        for sql, field in [
            ("UPDATE exposures SET exptime_s = 'NaN' WHERE rootname = :r", "exposures.exptime_s"),
            ("UPDATE exposures SET filter = 'F999Z' WHERE rootname = :r", "exposures.filter"),
            ("UPDATE exposures SET field_type = 'bogus' WHERE rootname = :r", "exposures.field_type"),
            (
                "UPDATE exposures SET field_type_method = NULL WHERE rootname = :r",
                "exposures.field_type_labelled",
            ),
            (
                "INSERT INTO cr_statistics VALUES (:r, 1, 1, 1, 100, 'Infinity', now())",
                "cr_statistics.rate_per_cm2_s",
            ),
        ]:
            with (
                pytest.raises(DatabaseError, match=field.replace(".", r"\.")),
                translated_errors("test"),
                session.begin(),
            ):
                session.execute(text(sql), {"r": rootname})


def test_stage_for_unknown_exposure_says_what_to_record_first(factory: Any, sessions: Any) -> None:
    records = factory.visit_records()
    with sessions() as session, pytest.raises(DatabaseError, match="record their observations first"):
        repo.record_metrics(session, records["metrics"])


def test_stage_inside_callers_transaction_uses_a_savepoint(factory: Any, sessions: Any) -> None:
    records = factory.visit_records()
    with sessions() as session:
        with session.begin():
            repo.record_observations(session, records["observations"])
            bad = dataclasses.replace(records["metrics"][0], tp=-5)
            with pytest.raises(DatabaseError):
                repo.record_metrics(session, [bad])
            repo.record_predictions(session, records["predictions"])
        counts = factory.table_counts(session)
    assert counts["exposures"] == 3
    assert counts["predictions"] == 3
    assert counts["exposure_metrics"] == 0


def test_model_versions_and_alias_history(factory: Any, sessions: Any) -> None:
    with sessions() as session:
        repo.record_model_version(session, model_name="deepcr-acs-wfc", version="1", source="deepcr_package")
        repo.record_model_version(
            session, model_name="deepcr-acs-wfc", version="2", source="mlflow", mlflow_run_id="abc123"
        )
        assert repo.record_alias(session, model_name="deepcr-acs-wfc", alias="champion", version="1")
        assert not repo.record_alias(session, model_name="deepcr-acs-wfc", alias="champion", version="1")
        assert repo.record_alias(session, model_name="deepcr-acs-wfc", alias="champion", version="2")
        assert repo.record_alias(session, model_name="deepcr-acs-wfc", alias="challenger", version="1")
        assert repo.current_aliases(session, "deepcr-acs-wfc") == {"champion": "2", "challenger": "1"}
        history = session.execute(
            text(
                "SELECT h.alias, v.version FROM model_alias_history h JOIN model_versions v "
                "ON v.id = h.model_version_id ORDER BY h.id"
            )
        ).all()
        assert [tuple(r) for r in history] == [("champion", "1"), ("champion", "2"), ("challenger", "1")]
        with pytest.raises(DatabaseError, match=r"model_versions\.source"):
            repo.record_model_version(session, model_name="deepcr-acs-wfc", version="3", source="pip")


def test_pipeline_runs_start_and_finish(factory: Any, sessions: Any) -> None:
    with sessions() as session:
        repo.start_run(
            session, run_id="scheduled__2026-01-01", dag_id="crlib_nightly_ingest", trigger="scheduled"
        )
        repo.finish_run(session, run_id="scheduled__2026-01-01", status="success", summary={"exposures": 12})
        row = session.execute(text("SELECT status, summary, finished_at FROM pipeline_runs")).one()
        assert row.status == "success"
        assert row.summary == {"exposures": 12}
        assert row.finished_at is not None
        with pytest.raises(DatabaseError, match="never started"):
            repo.finish_run(session, run_id="manual__x", status="failed")
        with pytest.raises(DatabaseError, match=r"pipeline_runs\.status"):
            repo.finish_run(session, run_id="scheduled__2026-01-01", status="exploded")
        # The Airflow listener marks the final state without a summary: the recorded counts stay.
        repo.finish_run(session, run_id="scheduled__2026-01-01", status="failed")
        row = session.execute(text("SELECT status, summary FROM pipeline_runs")).one()
        assert (row.status, row.summary) == ("failed", {"exposures": 12})


def test_concurrent_recorders_of_the_same_metrics_end_with_the_last_one(
    factory: Any, sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The second recorder waits on the first's uncommitted row, then replaces it (no duplicate)."""
    import logging
    import threading
    import time

    caplog.set_level(logging.INFO, logger="crlib.db.metric_store")
    records = factory.visit_records()
    first = records["metrics"][0]
    second = dataclasses.replace(first, tp=first.tp + 500)
    with sessions() as session:
        repo.record_observations(session, records["observations"])
        repo.record_model_version(
            session, model_name=first.model_name, version=first.model_version, source="mlflow"
        )
    errors: list[BaseException] = []

    def record_second() -> None:
        try:
            with sessions() as other:
                repo.record_metrics(other, [second])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    with sessions() as session:
        with session.begin():
            repo.record_metrics(session, [first])
            thread = threading.Thread(target=record_second)
            thread.start()
            time.sleep(1.0)  # the second recorder is now blocked on the unique index
            assert thread.is_alive()
        thread.join(timeout=60)
        assert not errors, errors
        rows = session.execute(text("SELECT tp FROM exposure_metrics")).scalars().all()
    assert rows == [second.tp]
    assert "retrying" in caplog.text


def test_rejecting_an_exposure_drops_the_results_derived_from_it(factory: Any, sessions: Any) -> None:
    """Reprocessing under changed rules: an exposure now rejected stops counting in the statistics."""
    records = factory.visit_records()
    accepted = records["verdicts"][1]
    assert accepted.verdict == "accept"
    rootname = accepted.rootname
    with sessions() as session:
        factory.record_visit(session, records)
        before = factory.table_counts(session)
        rejected = dataclasses.replace(accepted, verdict="reject")
        repo.record_screening(session, [rejected])
        after = factory.table_counts(session)
        for table, rows in (
            ("exposure_metrics", 1),
            ("predictions", 1),
            ("cr_statistics", 2),
            ("truth_chips", 2),
        ):
            assert after[table] == before[table] - rows, table
        left = session.execute(
            text(
                "SELECT (SELECT count(*) FROM exposure_metrics WHERE rootname = :r)"
                " + (SELECT count(*) FROM truth_results WHERE rootname = :r)"
                " + (SELECT count(*) FROM predictions WHERE rootname = :r)"
            ),
            {"r": rootname},
        ).scalar_one()
        assert left == 0
        # the exposure, its verdict and the other exposures' rows stay
        assert after["exposures"] == before["exposures"]
        assert after["screening_verdicts"] == before["screening_verdicts"]


def test_field_types_from_the_image_fill_only_what_the_metadata_left_unknown(
    factory: Any, sessions: Any
) -> None:
    from crlib.classify.labels import FieldTypeLabel, unknown_label

    records = factory.visit_records()
    first, second, third = (o.rootname for o in records["observations"])
    observations = [
        dataclasses.replace(o, field_type=None, field_type_method="unknown") if o.rootname != first else o
        for o in records["observations"]
    ]
    with sessions() as session:
        repo.record_observations(session, observations)
        changed = repo.record_field_types(
            session,
            {
                first: FieldTypeLabel("extragalactic", "image", 0.9, ("dense",)),
                second: FieldTypeLabel("extragalactic", "image", 0.9, ("dense",)),
                third: unknown_label("too few sources"),
            },
        )
        assert changed == 2  # the first exposure's metadata label stands
        rows = dict(
            (r[0], (r[1], r[2]))
            for r in session.execute(text("SELECT rootname, field_type, field_type_method FROM exposures"))
        )
        assert rows == {
            first: ("globular_cluster", "simulator"),
            second: ("extragalactic", "image"),
            third: (None, "unknown"),
        }
        with pytest.raises(DatabaseError, match=r"record their observations first"):
            repo.record_field_types(session, {"jzzz99zzq": unknown_label("x")})
