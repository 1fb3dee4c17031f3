"""Provenance of every score: split of the visit for the predicting model, truth status, scoring rules.

A model version whose training manifest includes a visit must not count that visit's exposures
in the default statistics; suspect truth is left out by default; the scoring rules are recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from crlib.db import repo
from crlib.db.stats import StatsFilter, model_performance, pooled_roc, refresh_summaries, tpr_at_fpr
from crlib.errors import DatabaseError

EVERY_SPLIT = ("train", "validation", "test", "unseen")


def _suspect(records: dict[str, Any]) -> dict[str, Any]:
    reason = "alignment not_aligned: star cores may be flagged as CR"
    truths = [dataclasses.replace(t, status="suspect", reasons=(reason,)) for t in records["truths"]]
    return {**records, "truths": truths}


@pytest.fixture
def archive(factory: Any, sessions: Any) -> dict[str, Any]:
    """Three visits of one filter and field type, scored by deepcr-acs-wfc 1.

    ``jbt122`` is in the model's train split, ``jbt123`` in its test split, ``jbt124`` is not
    in its manifest and its truth is suspect.
    """
    visits = {
        "train": factory.visit_records("jbt122", seed=1),
        "test": factory.visit_records("jbt123", seed=2, mjd=55000.5),
        "suspect": _suspect(factory.visit_records("jbt124", seed=3, mjd=55000.75)),
    }
    with sessions() as session:
        for records in visits.values():
            factory.record_visit(session, records)
        repo.record_training_splits(
            session,
            model_name="deepcr-acs-wfc",
            version="1",
            splits={"jbt122": "train", "jbt123": "test", "jzz999": "validation"},
            dataset_id="patches-abc123",
        )
    return visits


def _expected(metrics: list[Any]) -> tuple[int, int, float]:
    """Exposures, summed TP and the pooled TPR at FPR 0.5% of ``metrics``."""
    fpr, tpr = pooled_roc(
        np.sum([m.hist_cr for m in metrics], axis=0), np.sum([m.hist_noncr for m in metrics], axis=0)
    )
    return len(metrics), sum(m.tp for m in metrics), tpr_at_fpr(fpr, tpr, 0.005)


def _answer(session: Any, **where: Any) -> tuple[int, int, float]:
    (row,) = model_performance(session, by=("model",), where=StatsFilter(**where))
    return row.n_exposures, row.tp, row.tpr_at_fpr[0.005]


@pytest.mark.parametrize("refreshed", [False, True], ids=["live", "refreshed"])
def test_training_visits_are_left_out_by_default_and_included_on_request(
    sessions: Any, archive: dict[str, Any], refreshed: bool
) -> None:
    train, test, suspect = (archive[k]["metrics"] for k in ("train", "test", "suspect"))
    with sessions() as session:
        if refreshed:
            refresh_summaries(session)
        default = _answer(session)
        with_training = _answer(session, splits=EVERY_SPLIT)
        everything = _answer(session, splits=EVERY_SPLIT, truth_statuses=())
        (row,) = model_performance(session, by=("model",))
        (wide,) = model_performance(session, by=("model",), where=StatsFilter(splits=EVERY_SPLIT))
    assert default == _expected(test)
    assert with_training == _expected(train + test)
    assert everything == _expected(train + test + suspect)
    assert default[0] == 3 and with_training[0] == 6 and everything[0] == 9
    assert default[2] != with_training[2]  # the training visit changes the pooled TPR
    assert (row.splits, row.truth_statuses, row.models) == (("test",), ("ok",), ("deepcr-acs-wfc:1",))
    assert wide.splits == ("train", "test")
    assert row.as_dict()["splits"] == "test" and row.as_dict()["truth"] == "ok"


def test_suspect_truth_is_recorded_and_left_out_unless_asked(sessions: Any, archive: dict[str, Any]) -> None:
    suspect = archive["suspect"]["metrics"]
    with sessions() as session:
        loaded = {m.rootname: m for m in repo.load_metrics(session)}
        by_status = {
            r.group["truth_status"]: r.n_exposures
            for r in model_performance(
                session, by=("truth_status",), where=StatsFilter(truth_statuses=("ok", "suspect"))
            )
        }
        by_split = {
            r.group["split"]: r.n_exposures
            for r in model_performance(
                session, by=("split",), where=StatsFilter(splits=(), truth_statuses=())
            )
        }
        only_suspect = _answer(session, truth_statuses=("suspect",))
    first = loaded[suspect[0].rootname]
    assert (first.truth_status, first.truth_method, first.split) == ("suspect", "drizzle", "unseen")
    assert first.truth_reasons == ("alignment not_aligned: star cores may be flagged as CR",)
    assert loaded[archive["train"]["metrics"][0].rootname].split == "train"
    assert by_status == {"ok": 3, "suspect": 3}  # test + unseen splits only
    assert by_split == {"train": 3, "test": 3, "unseen": 3}
    assert only_suspect == _expected(suspect)


def test_recording_a_manifest_later_moves_recorded_scores_at_once(factory: Any, sessions: Any) -> None:
    records = factory.visit_records("jbt122", seed=1)
    with sessions() as session:
        factory.record_visit(session, records)
        refresh_summaries(session)
        assert _answer(session)[0] == 3
        assert repo.split_of(session, "jbt122", model_name="deepcr-acs-wfc", version="1") == "unseen"
        repo.record_training_splits(
            session,
            model_name="deepcr-acs-wfc",
            version="1",
            splits={"jbt122": "validation"},
            dataset_id="d1",
        )
        assert repo.split_of(session, "jbt122", model_name="deepcr-acs-wfc", version="1") == "validation"
        assert model_performance(session) == []  # before any refresh
        refresh_summaries(session)
        assert model_performance(session) == []
        assert _answer(session, splits=EVERY_SPLIT)[0] == 3
        # metrics recorded after the manifest get their split on recording
        repo.record_metrics(session, records["metrics"])
        assert {m.split for m in repo.load_metrics(session)} == {"validation"}
        states = {f"{s.model_name}:{s.version}": s for s in repo.training_splits(session)}
        assert states["deepcr-acs-wfc:1"].visits == {"train": 0, "validation": 1, "test": 0}
        assert "dataset d1" in states["deepcr-acs-wfc:1"].describe()
        # replacing the manifest as a set: the visit is unseen again
        repo.record_training_splits(
            session, model_name="deepcr-acs-wfc", version="1", splits={"jbt999": "train"}, dataset_id="d2"
        )
        assert _answer(session)[0] == 3


def test_a_split_on_the_record_must_agree_with_the_manifest(factory: Any, sessions: Any) -> None:
    records = factory.visit_records("jbt122", seed=1)
    with sessions() as session:
        factory.record_visit(session, records)
        repo.record_training_splits(
            session, model_name="deepcr-acs-wfc", version="1", splits={"jbt122": "train"}, dataset_id="d1"
        )
        wrong = dataclasses.replace(records["metrics"][0], split="test", tp=1)
        with pytest.raises(DatabaseError, match=r"split .* 'test'.* manifest puts visit jbt122 in 'train'"):
            repo.record_metrics(session, [wrong])
        with pytest.raises(DatabaseError, match="a failed truth is never scored"):
            repo.record_metrics(session, [dataclasses.replace(wrong, split=None, truth_status="failed")])
        with pytest.raises(DatabaseError, match="external weights"):
            repo.record_training_splits(
                session,
                model_name="deepcr-acs-wfc",
                version="2",
                splits={"jbt122": "train"},
                dataset_id="external",
            )
        with pytest.raises(DatabaseError, match=r"model_version_splits\.split"):
            repo.record_training_splits(
                session,
                model_name="deepcr-acs-wfc",
                version="2",
                splits={"jbt122": "holdout"},
                dataset_id="d",
            )
        assert {m.tp for m in repo.load_metrics(session)} == {m.tp for m in records["metrics"]}


def test_scoring_rules_are_recorded_and_reported(factory: Any, sessions: Any) -> None:
    records = factory.visit_records("jbt122", seed=1)
    bordered = [
        dataclasses.replace(m, border_px=128, dq_excluded=True) if i else m
        for i, m in enumerate(records["metrics"])
    ]
    with sessions() as session:
        factory.record_visit(session, {**records, "metrics": bordered})
        loaded = {m.rootname: m for m in repo.load_metrics(session)}
        rules = session.execute(
            text("SELECT rootname, border_px, dq_excluded FROM exposure_performance ORDER BY rootname")
        ).all()
        (mixed,) = model_performance(session, by=("model",))
        by_border = {r.group["border"]: r.n_exposures for r in model_performance(session, by=("border",))}
    assert [(loaded[m.rootname].border_px, loaded[m.rootname].dq_excluded) for m in bordered] == [
        (0, False),
        (128, True),
        (128, True),
    ]
    assert [(b, d) for _, b, d in rules] == [(0, False), (128, True), (128, True)]
    assert mixed.border_px == (0, 128) and mixed.as_dict()["border_px"] == "0+128"
    assert mixed.as_dict()["dq_excluded"] == "no+yes"
    assert by_border == {0: 1, 128: 2}


def test_reader_views_pool_unseen_data_on_ok_truth(sessions: Any, archive: dict[str, Any]) -> None:
    with sessions() as session:
        refresh_summaries(session)
        pooled = session.execute(
            text(
                "SELECT n_exposures, tp, border_px, dq_excluded, "
                "roc_tpr_at_fpr(hist_cr, hist_noncr, 0.005) AS tpr FROM model_performance_total"
            )
        ).one()
        monthly = session.execute(text("SELECT sum(n_exposures) FROM model_performance_monthly")).scalar_one()
        every = session.execute(
            text(
                "SELECT split, truth_status, sum(n_exposures) FROM model_performance_total_by_split "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ).all()
        (python,) = model_performance(session, by=("model",))
    n, tp, expected = _expected(archive["test"]["metrics"])
    assert (pooled.n_exposures, pooled.tp, pooled.border_px, pooled.dq_excluded) == (n, tp, 0, False)
    assert pooled.tpr == expected == python.tpr_at_fpr[0.005]  # exactly: one definition
    assert monthly == n
    assert [tuple(r) for r in every] == [("test", "ok", 3), ("train", "ok", 3), ("unseen", "suspect", 3)]
