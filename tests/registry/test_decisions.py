"""Every promotion-gate decision is a row of ``promotion_decisions`` (migration 0003)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from sqlalchemy import inspect, text

from crlib.registry.gate_decision import GateComparison, GateThresholds, PromotionDecision


def _decision(*, applied: bool, promoted: bool, dry_run: bool = False, at_ms: int, **kw: Any):
    comparisons = (
        GateComparison("extragalactic/F606W", "0.0005", False, 85.0, 84.2, -0.8, True),
        GateComparison("extragalactic/F606W", "0.005", True, 99.0, 99.6, 0.6, False),
    )
    values: dict[str, Any] = {
        "model_name": "deepcr-acs-wfc",
        "challenger_version": "3",
        "champion_version": "2",
        "promoted": promoted,
        "applied": applied,
        "mean_delta_points": -0.1,
        "comparisons": comparisons,
        "reasons": () if promoted else ("extragalactic/F606W TPR@FPR=0.05%: 84.20% vs champion 85.00%",),
        "thresholds": GateThresholds(max_drop_points=0.5, min_mean_gain_points=0.0),
        "dataset_id": "0123456789abcdef",
        "dry_run": dry_run,
        "decided_at_ms": at_ms,
        "ci_low_points": -0.45,
        "ci_high_points": 0.25,
        "test_fields": 5,
        "test_visits": 7,
        "notes": ("champion deepcr-acs-wfc/2: training manifest external",),
    }
    values.update(kw)
    return PromotionDecision(**values)


def test_migration_0003_upgrades_and_downgrades(database_url: str) -> None:
    from alembic import command

    from crlib.db.engine import make_engine
    from crlib.db.migrate import alembic_config, current_revision, upgrade

    engine = make_engine(database_url)
    try:
        assert upgrade(engine, revision="0003") == "0003"
        assert "promotion_decisions" in inspect(engine).get_table_names()
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        assert current_revision(engine) == "0002"
        assert "promotion_decisions" not in inspect(engine).get_table_names()
        assert upgrade(engine, revision="0003") == "0003"
        assert "promotion_decisions" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_every_decision_is_recorded_once_with_its_numbers(results_sessions, tracking_uri: str) -> None:
    from crlib.db.model_registry import current_aliases, decision_history
    from crlib.registry.decisions import database_recorder

    record = database_recorder(results_sessions, tracking_uri=tracking_uri, run_id="manual__gate")
    refused = _decision(applied=False, promoted=False, at_ms=1_790_000_000_000)
    dry = _decision(applied=False, promoted=True, dry_run=True, at_ms=1_790_000_100_000, reasons=())
    nothing = _decision(
        applied=False,
        promoted=False,
        at_ms=1_790_000_200_000,
        comparisons=(),
        mean_delta_points=math.nan,
        reasons=("no comparable numbers",),
    )
    promoted = _decision(
        applied=True, promoted=True, at_ms=1_790_000_300_000, mean_delta_points=1.25, reasons=()
    )
    for decision in (refused, dry, nothing, promoted, refused):  # the refusal twice: still one row
        record(decision)

    with results_sessions() as session:
        history = decision_history(session, "deepcr-acs-wfc")
        assert [d.outcome for d in history] == [
            "promoted",
            "refused",
            "would promote (dry run)",
            "refused",
        ]
        newest, no_numbers, dry_row, refused_row = history
        assert newest.decided_at == dt.datetime(2026, 9, 21, 14, 18, 20, tzinfo=dt.UTC)
        assert (newest.challenger_version, newest.champion_version, newest.mean_delta_points) == (
            "3",
            "2",
            1.25,
        )
        assert no_numbers.mean_delta_points is None
        (nothing,) = no_numbers.comparisons  # only the gate summary
        assert nothing["kind"] == "gate_summary" and nothing["mean_delta_points"] is None
        assert dry_row.dry_run and dry_row.promoted and not dry_row.applied
        assert refused_row.reasons == refused.reasons and refused_row.run_id == "manual__gate"
        assert refused_row.comparisons[0] == {
            "group": "extragalactic/F606W",
            "fpr": "0.0005",
            "dilated": False,
            "champion_percent": 85.0,
            "challenger_percent": 84.2,
            "delta_points": -0.8,
            "failed": True,
        }
        # after the numbers: the interval, its settings, the test set's size and the notes
        summary = refused_row.comparisons[-1]
        assert len(refused_row.comparisons) == 3 and summary["kind"] == "gate_summary"
        assert (summary["ci_low_points"], summary["ci_high_points"], summary["failed"]) == (-0.45, 0.25, True)
        assert (summary["confidence"], summary["resamples"], summary["seed"]) == (0.95, 1000, 0)
        assert (summary["test_fields"], summary["test_visits"]) == (5, 7)
        assert summary["notes"] == ["champion deepcr-acs-wfc/2: training manifest external"]
        assert (refused_row.max_drop_points, refused_row.min_mean_gain_points) == (0.5, 0.0)
        assert decision_history(session, "deepcr-acs-wfc", limit=1) == [newest]
        assert decision_history(session, "deepcr-wfc3-uvis") == []
        # the applied decision moved the champion in the alias history; both versions are mlflow ones
        assert current_aliases(session, "deepcr-acs-wfc") == {"champion": "3"}
        sources = session.execute(text("SELECT version, source FROM model_versions ORDER BY version")).all()
        assert [tuple(r) for r in sources] == [("2", "mlflow"), ("3", "mlflow")]


def test_inconsistent_decisions_are_refused_naming_the_field(results_sessions) -> None:
    from crlib.db.model_registry import record_promotion_decision
    from crlib.errors import DatabaseError

    base: dict[str, Any] = {
        "model_name": "deepcr-acs-wfc",
        "challenger_version": "2",
        "champion_version": "1",
        "decided_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "promoted": True,
        "applied": False,
        "dry_run": False,
        "mean_delta_points": 0.3,
        "max_drop_points": 0.5,
        "min_mean_gain_points": 0.0,
        "reasons": (),
        "comparisons": (),
        "dataset_id": "d",
    }
    with results_sessions() as session:
        with pytest.raises(DatabaseError, match=r"promotion_decisions\.applied"):
            record_promotion_decision(session, **(base | {"applied": True, "dry_run": True}))
        with pytest.raises(DatabaseError, match=r"promotion_decisions\.dataset_id"):
            record_promotion_decision(session, **(base | {"dataset_id": ""}))
        with pytest.raises(DatabaseError, match=r"promotion_decisions\.max_drop_points"):
            record_promotion_decision(session, **(base | {"max_drop_points": -1.0}))
        assert session.execute(text("SELECT count(*) FROM promotion_decisions")).scalar_one() == 0
