"""Whole DAG runs with ``dag.test()``: a simulated archive served by the fake MAST, real Postgres.

One module-scoped archive: two visits (globular cluster, extragalactic) of three small exposures,
one of which is corrupt (garbage bytes with a matching archive checksum, so it downloads fine and
must be rejected by screening without failing the run). Also checked: the truth asset gets an
event only from runs that recorded new truth, the statistics summaries are refreshed by the run,
and reprocessing with ``stages: ["score"]`` reuses the recorded truth without drizzling again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pendulum
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
)


def _corrupt(archive_root: Path, rootname: str) -> None:
    manifest_path = archive_root / "observations.json"
    manifest = json.loads(manifest_path.read_text())
    for product in manifest["products"]:
        if product["obs_id"] == rootname:
            path = archive_root / product["crlib_path"]
            path.write_bytes(b"SIMPLE  = this is not a FITS file" + bytes(5000))
            product["size"] = path.stat().st_size
            product["md5"] = hashlib.md5(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def served_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, object]]:
    from crlib.harness.fake_mast import FakeMast
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("dag-archive")
    archive = simulate_archive(root, visits=2, exposures=3, field_type="mixed", size="small", seed=31)
    _corrupt(root, archive.visits[1].exposures[2].rootname)
    with FakeMast(root) as fake:
        yield archive, fake


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch, served_archive, database_url: str):
    archive, fake = served_archive
    monkeypatch.setenv("CRLIB_ARCHIVE", "mast")
    monkeypatch.setenv("CRLIB_MAST_SERVER", fake.url)
    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_THREADS", "2")
    return archive, database_url


def _chips(exposures) -> int:
    """SCI extensions in the exposures' FLC files (two for full-frame ACS/WFC, one for a WFC1 subarray)."""
    from astropy.io import fits

    total = 0
    for exposure in exposures:
        with fits.open(exposure.path) as hdul:
            total += sum(1 for hdu in hdul if hdu.name == "SCI")
    return total


def _truth_events(airflow_home: Path) -> list[dict]:
    """Asset events of ``crlib://results/truth`` in the Airflow metadata database (their extras)."""
    import sqlite3

    with sqlite3.connect(airflow_home / "airflow.db") as connection:
        rows = connection.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = 'crlib://results/truth' ORDER BY e.id"
        ).fetchall()
    return [json.loads(extra) if isinstance(extra, str) else dict(extra or {}) for (extra,) in rows]


def _pooled_exposures(database_url: str, *, truth_statuses: tuple[str, ...] = ("ok",)) -> int:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from crlib.db.stats import StatsFilter, model_performance

    engine = create_engine(database_url)
    with Session(engine) as session:
        where = StatsFilter(truth_statuses=truth_statuses)
        pooled = sum(row.n_exposures for row in model_performance(session, by=("field_type",), where=where))
    engine.dispose()
    return pooled


def _files_state(paths: list[Path]) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in paths}


def test_nightly_ingest_then_reprocess_without_duplicates(airflow_db, dagbag, pipeline_env) -> None:
    from crlib.config import load_settings
    from crlib.pipeline.ledger import RunLedger

    archive, database_url = pipeline_env
    data_root = load_settings().data_root
    corrupt = archive.visits[1].exposures[2].rootname
    nightly = dagbag.dags["crlib_nightly_ingest"]
    logical_date = pendulum.datetime(2026, 11, 20, 3, 30, tz="UTC")
    earlier = len(_truth_events(airflow_db))  # the session's Airflow database is shared by DAG tests

    run = nightly.test(logical_date=logical_date)
    assert run.state == "success"
    first = table_counts(database_url, TABLES)
    assert first["exposures"] == 6
    assert first["screening_verdicts"] == 6
    # The corrupt file is rejected with a reason naming the problem; the other five are predicted.
    verdicts = dict(query_rows(database_url, "SELECT rootname, verdict FROM screening_verdicts"))
    assert verdicts[corrupt] == "reject"
    assert sum(1 for v in verdicts.values() if v == "accept") == 5
    assert first["predictions"] == 5
    assert first["truth_results"] == 5
    assert first["exposure_metrics"] == 5
    # One row per chip the files hold (seed 31 draws visit 1 as a one-chip WFC1A-512 subarray visit).
    kept = [e for v in archive.visits for e in v.exposures if e.rootname != corrupt]
    assert first["cr_statistics"] == _chips(kept) == 8
    # One damaged file: the run is partial (Airflow's success does not hide it), and says why.
    statuses = query_rows(
        database_url, "SELECT status, message FROM pipeline_runs WHERE dag_id = 'crlib_nightly_ingest'"
    )
    assert statuses == [("partial", "1 of 6 exposure(s) failed (1 at screen)")], statuses
    summary = RunLedger(data_root, run.run_id).summary()
    assert list(summary["failed"]) == [corrupt] and corrupt in summary["failed"][corrupt]
    assert query_rows(database_url, "SELECT count(*) FROM archive_watermarks") == [(1,)]
    # New truth was recorded: one event on the truth asset, saying how much.
    events = _truth_events(airflow_db)[earlier:]
    assert [e["new_truth"] for e in events] == [5], events
    # The run refreshed the statistics summaries: crlib stats pools the five scored exposures.
    # By default it pools the scores resting on ok truth; suspect truth when asked.
    ok = query_rows(database_url, "SELECT count(*) FROM exposure_metrics WHERE truth_status = 'ok'")[0][0]
    assert _pooled_exposures(database_url) == ok
    assert _pooled_exposures(database_url, truth_statuses=("ok", "suspect")) == 5
    assert RunLedger(data_root, run.run_id).summary()["summaries_refreshed_s"]

    # The same logical date again: the watermark has moved, nothing new is found, nothing is added,
    # and no truth event is emitted.
    again = nightly.test(logical_date=logical_date)
    assert again.state == "success"
    assert table_counts(database_url, TABLES) == first
    assert len(_truth_events(airflow_db)[earlier:]) == 1

    # An operator reprocesses the first visit's proposal: its rows are replaced, never duplicated.
    proposal = archive.visits[0].proposal_id
    reprocess = dagbag.dags["crlib_reprocess_proposal"]
    run = reprocess.test(run_conf={"proposal_id": proposal, "visits": [archive.visits[0].visit.upper()]})
    assert run.state == "success"
    assert table_counts(database_url, TABLES) == first
    # Recorded as the reprocess DAG's run (not the nightly's), and successful: that visit is clean.
    assert query_rows(
        database_url, f"SELECT dag_id, status FROM pipeline_runs WHERE run_id = '{run.run_id}'"
    ) == [("crlib_reprocess_proposal", "success")]
    assert [e["new_truth"] for e in _truth_events(airflow_db)[earlier:]] == [5, 3]  # truth redone for 3

    # Only the score stage redone: the recorded truth is reused (no alignment, no drizzle: the
    # truth files and the drizzle work directory are untouched), rows are replaced, not added.
    visit = archive.visits[0].visit
    truth_files = sorted((data_root / "work" / visit).glob("set*/truth/*_crtruth.fits"))
    assert len(truth_files) == 3
    drizzle_dirs = sorted((data_root / "work" / visit).glob("set*/drizzle"))
    before = _files_state(truth_files + drizzle_dirs)
    run = reprocess.test(run_conf={"proposal_id": proposal, "visits": [visit], "stages": ["score"]})
    assert run.state == "success"
    assert _files_state(truth_files + drizzle_dirs) == before
    assert table_counts(database_url, TABLES) == first
    state = RunLedger(data_root, run.run_id).visit(visit)
    assert state.truth_reused == sorted(o.rootname for o in archive.visits[0].exposures)
    assert state.screen_reused is True and len(state.fetch_reused) == 3
    assert len(_truth_events(airflow_db)[earlier:]) == 2  # reused truth is not new truth
    summary = RunLedger(data_root, run.run_id).summary()
    assert summary["truth_new"] == 0 and summary["reused"]["truth"] == 3 and summary["scored"] == 3


def test_reprocess_refuses_a_request_that_names_nothing(airflow_db, dagbag, pipeline_env) -> None:
    """A proposal id of -5 is not clamped to 1 by the form: the run fails at once, saying why."""
    _, database_url = pipeline_env
    reprocess = dagbag.dags["crlib_reprocess_proposal"]
    run = reprocess.test(run_conf={"proposal_id": -5})
    assert run.state == "failed"
    rows = query_rows(
        database_url, f"SELECT dag_id, status, message FROM pipeline_runs WHERE run_id = '{run.run_id}'"
    )
    assert rows == [
        ("crlib_reprocess_proposal", "failed", "proposal -5 is not an HST proposal number (1-99999)")
    ]
    assert table_counts(database_url, TABLES)["exposures"] == 0
