"""``redo=False`` reuses what an earlier run produced; ``redo=True`` (and any changed input) recomputes.

Runs the real stages in-process (``run_pipeline``) on the session's small simulated archive (two
visits of three exposures) against a real PostgreSQL: one full run, then reprocessing runs that
redo only some stages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from testsupport.sql import query_rows, table_counts

pytestmark = pytest.mark.slow

TABLES = (
    "exposures",
    "screening_verdicts",
    "screening_reasons",
    "alignment_results",
    "truth_results",
    "truth_chips",
    "predictions",
    "exposure_metrics",
    "cr_statistics",
    "pipeline_runs",
)


def _scalar(database_url: str, sql: str) -> object:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        value = connection.execute(text(sql)).scalar_one()
    engine.dispose()
    return value


def _stats_after(database_url: str) -> tuple[int, list]:
    """Exposures ``crlib stats performance`` pools, and when each summary was last refreshed."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from crlib.db.stats import model_performance, summaries_refreshed_at

    engine = create_engine(database_url)
    with Session(engine) as session:
        pooled = sum(row.n_exposures for row in model_performance(session, by=("field_type",)))
        refreshed = list(summaries_refreshed_at(session).values())
    engine.dispose()
    return pooled, refreshed


def _mtimes(paths: list[Path]) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in paths}


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    # the stages' loggers: crlib.pipeline.stages and its modules (crlib.pipeline.stages.truth ...)
    return [r.getMessage() for r in caplog.records if f"{r.name}.".startswith("crlib.pipeline.stages.")]


def test_reprocess_redoing_only_score_reuses_truth(
    small_archive, database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from crlib.config import load_settings
    from crlib.pipeline.ledger import RunLedger
    from crlib.pipeline.sequential import run_pipeline

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_ARCHIVE", f"local:{small_archive.root}")
    monkeypatch.setenv("CRLIB_THREADS", "2")
    settings = load_settings()
    visit = small_archive.visits[0]
    rootnames = sorted(e.rootname for e in visit.exposures)
    caplog.set_level(logging.INFO, logger="crlib")

    started = _scalar(database_url, "SELECT now()")
    first = run_pipeline(settings, run_id="first")
    assert first["scored"] == 6 and first["truth_new"] == 6, first
    full = table_counts(database_url, TABLES)
    assert full["exposure_metrics"] == 6 and full["truth_results"] == 6
    # Every score records what it rests on: the truth's status and method, the split of its visit for
    # the model (deepCR's shipped weights: unseen) and the profile's scoring rules (128-px border, DQ).
    provenance = query_rows(
        database_url,
        "SELECT m.truth_status, t.status, m.truth_method, m.split, m.border_px, m.dq_excluded "
        "FROM exposure_metrics m JOIN truth_results t ON t.rootname = m.rootname AND t.method = 'drizzle'",
    )
    assert len(provenance) == 6
    assert all(r[0] == r[1] and r[2:] == ("drizzle", "unseen", 128, True) for r in provenance), provenance
    # finish_run refreshed the statistics summaries; crlib stats pools the run's exposures on ok truth.
    pooled, refreshed = _stats_after(database_url)
    assert pooled == sum(1 for r in provenance if r[0] == "ok") == 6, provenance
    assert refreshed and all(when is not None and when >= started for when in refreshed), refreshed
    assert set(first["summaries_refreshed_s"]) and first["reused"]["truth"] == 0
    # Inference ran at the precision CRLIB_INFERENCE_PRECISION=auto gives this machine (bf16 on a CPU
    # with native bf16, else fp32), and every prediction file says so.
    from astropy.io import fits

    from crlib.model.inference import resolve_device, resolve_precision

    expected = resolve_precision("auto", resolve_device(settings.device))
    predictions = sorted((settings.data_root / "predictions").rglob("*_crpred.fits"))
    assert len(predictions) == 6 and {fits.getheader(p)["CRPREC"] for p in predictions} == {expected}

    truth_files = sorted((settings.data_root / "work" / visit.visit).glob("set*/truth/*_crtruth.fits"))
    drizzle_dirs = sorted((settings.data_root / "work" / visit.visit).glob("set*/drizzle"))
    assert [p.name.split("_")[0] for p in truth_files] == rootnames and drizzle_dirs
    downloads = sorted((settings.data_root / "archive" / visit.visit).glob("*_flc.fits"))
    before = _mtimes(truth_files + drizzle_dirs + downloads)

    # Redo only the score stage: downloads, verdicts, truth and predictions are reused.
    caplog.clear()
    summary = run_pipeline(
        settings, run_id="score-only", proposal_id=visit.proposal_id, visits=[visit.visit], redo=["score"]
    )
    assert _mtimes(truth_files + drizzle_dirs + downloads) == before  # nothing re-downloaded or drizzled
    assert any(
        "reusing recorded truth of 3 exposures (no alignment, no drizzle)" in m for m in _messages(caplog)
    )
    assert not [r for r in caplog.records if r.name.startswith(("crlib.truth", "crlib.align"))]
    state = RunLedger(settings.data_root, "score-only").visit(visit.visit)
    assert state.truth_reused == rootnames and state.screen_reused is True
    assert state.fetch_reused == rootnames
    assert summary["truth_new"] == 0 and summary["scored"] == 3
    assert summary["reused"] == {"fetch": 3, "screen": 1, "truth": 3, "infer": 3, "score": 0}
    assert table_counts(database_url, TABLES) == {**full, "pipeline_runs": full["pipeline_runs"] + 1}

    # Redo nothing: the metrics are reused too and recorded again, still without duplicates.
    summary = run_pipeline(
        settings, run_id="reuse-all", proposal_id=visit.proposal_id, visits=[visit.visit], redo=[]
    )
    assert summary["reused"]["score"] == 3 and summary["scored"] == 3
    assert table_counts(database_url, TABLES) == {**full, "pipeline_runs": full["pipeline_runs"] + 2}

    # A truth file rewritten since it was recorded is not trusted: that set is drizzled again.
    os.utime(truth_files[0], ns=(before[str(truth_files[0])] + 10**9, before[str(truth_files[0])] + 10**9))
    caplog.clear()
    summary = run_pipeline(
        settings, run_id="stale-truth", proposal_id=visit.proposal_id, visits=[visit.visit], redo=["score"]
    )
    assert summary["truth_new"] == 3 and summary["reused"]["truth"] == 0
    assert not any("reusing recorded truth" in m for m in _messages(caplog))
    rebuilt = _mtimes(truth_files + drizzle_dirs)
    assert all(rebuilt[str(p)] != before[str(p)] for p in truth_files + drizzle_dirs)
    assert table_counts(database_url, TABLES) == {**full, "pipeline_runs": full["pipeline_runs"] + 3}


def test_redo_fetch_downloads_again_and_rejects_unknown_stages(
    small_archive, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crlib.config import load_settings
    from crlib.pipeline import stages
    from crlib.pipeline.ledger import RunLedger
    from crlib.pipeline.sequential import run_pipeline

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_ARCHIVE", f"local:{small_archive.root}")
    settings = load_settings()
    visit = small_archive.visits[1]
    with pytest.raises(ValueError, match="drizzle"):
        run_pipeline(settings, run_id="bad", redo=["drizzle"])

    stages.poll_visits(
        settings, run_id="r1", dag_id="crlib_cli_run", proposal_id=visit.proposal_id, visits=[visit.visit]
    )
    stages.fetch_visit(settings, run_id="r1", visit=visit.visit, redo=False)
    first = RunLedger(settings.data_root, "r1").visit(visit.visit)
    assert first.fetch_reused == [] and len(first.checksums) == 3
    files = [Path(p) for p in first.files.values()]
    before = _mtimes(files)

    stages.fetch_visit(settings, run_id="r1", visit=visit.visit, redo=False)
    state = RunLedger(settings.data_root, "r1").visit(visit.visit)
    assert len(state.fetch_reused) == 3 and _mtimes(files) == before

    # redo=True downloads again (new files, same verified content).
    for path in files:
        os.utime(path, ns=(before[str(path)] - 10**9, before[str(path)] - 10**9))
    stages.fetch_visit(settings, run_id="r1", visit=visit.visit, redo=True)
    state = RunLedger(settings.data_root, "r1").visit(visit.visit)
    assert state.fetch_reused == [] and state.checksums == first.checksums
    assert all(p.stat().st_mtime_ns > before[str(p)] - 10**9 for p in files)
