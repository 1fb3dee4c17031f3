"""``crlib db`` / ``crlib stats`` / ``crlib bench db`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRLIB_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def recorded_url(factory: Any, database_url: str) -> str:
    result = run_cli("db", "upgrade", url=database_url)
    assert result.returncode == 0, result.stderr
    from crlib.db.migrate import head_revision

    assert f"-> {head_revision()}" in result.stdout
    from crlib.db.engine import make_engine, session_factory

    engine = make_engine(database_url)
    with session_factory(engine)() as session:
        factory.record_visit(session, factory.visit_records())
        factory.record_visit(
            session,
            factory.visit_records(
                "jc4a01", proposal_id=12000, filter_name="F814W", field_type="extragalactic", mjd=56000.5
            ),
        )
    engine.dispose()
    return database_url


def test_stats_cr_rate_json_csv_and_plot(recorded_url: str, tmp_path: Path) -> None:
    result = run_cli("stats", "cr-rate", "--by", "filter", "--format", "json", "--refresh", url=recorded_url)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["filter"] for r in rows] == ["F606W", "F814W"]
    assert all(r["n_chips"] == 6 for r in rows)

    plot = tmp_path / "trend.png"
    result = run_cli(
        "stats",
        "cr-rate",
        "--by",
        "month",
        "--format",
        "csv",
        "--filter",
        "F814W",
        "--plot",
        str(plot),
        url=recorded_url,
    )
    assert result.returncode == 0, result.stderr
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["month"] for r in parsed] == ["2012-03-01"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_performance_table_and_roc_plot(recorded_url: str, tmp_path: Path) -> None:
    run_cli("stats", "refresh", url=recorded_url)
    plot = tmp_path / "roc.png"
    result = run_cli(
        "stats", "performance", "--field-type", "extragalactic", "--plot", str(plot), url=recorded_url
    )
    assert result.returncode == 0, result.stderr
    assert "deepcr-acs-wfc:1" in result.stdout and "F814W" in result.stdout
    assert "F606W" not in result.stdout
    assert plot.stat().st_size > 1000
    result = run_cli("stats", "performance", "--proposal", "10775", "--format", "json", url=recorded_url)
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and 0 <= rows[0]["tpr_at_fpr_0.005"] <= 1


@pytest.mark.parametrize(
    "args",
    [
        ["stats", "cr-rate", "--by", "galaxy"],
        ["stats", "performance", "--field-type", "spiral_arm"],
        ["stats", "cr-rate", "--since", "2020-13-01"],
        ["stats", "cr-rate", "--since", "2020-01-01", "--until", "2019-01-01"],
    ],
)
def test_bad_stats_options_are_one_line_errors(recorded_url: str, args: list[str]) -> None:
    result = run_cli(*args, url=recorded_url)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_database_is_one_line_with_masked_url() -> None:
    result = run_cli("stats", "cr-rate", url="postgresql://svc:topsecret@127.0.0.1:9/crlib")
    assert result.returncode != 0
    assert "topsecret" not in result.stderr
    assert "127.0.0.1:9" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stats_on_a_never_migrated_database_point_to_db_upgrade(database_url: str) -> None:
    for args in (("stats", "pipeline"), ("stats", "cr-rate")):
        result = run_cli(*args, url=database_url)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "run `crlib db upgrade`" in result.stderr and "has no table or view" in result.stderr


def test_db_status_reports_revision_and_summary_state(recorded_url: str) -> None:
    from crlib.db.migrate import head_revision

    result = run_cli("db", "status", url=recorded_url)
    assert result.returncode == 0, result.stderr
    assert f"revision: {head_revision()} (newest: {head_revision()})" in result.stdout
    assert "2 month x filter cell(s) changed since" in result.stdout
    result = run_cli("stats", "refresh", url=recorded_url)
    assert result.returncode == 0, result.stderr
    assert "2 changed month x filter cell(s) refreshed" in result.stdout
    assert "up to date" in run_cli("db", "status", url=recorded_url).stdout


def test_stats_are_current_before_a_refresh_and_say_so(recorded_url: str) -> None:
    result = run_cli("stats", "cr-rate", "--by", "filter", "--format", "json", url=recorded_url)
    assert result.returncode == 0, result.stderr
    assert [r["n_chips"] for r in json.loads(result.stdout)] == [6, 6]
    assert "changed since" in result.stderr and "answered from the recorded rows" in result.stderr
    result = run_cli("stats", "performance", url=recorded_url)
    assert result.returncode == 0, result.stderr
    assert "changed since" in result.stdout  # the note under the table


def test_bench_db_runs_with_a_small_archive(database_url: str) -> None:
    """The full benchmark at 2,000 exposures with full-length (1,699-bin) histograms."""
    result = run_cli(
        "bench", "db", "--exposures", "2000", "--record-rows", "500", "--format", "json", url=database_url
    )
    assert result.returncode == 0, result.stderr
    rows = {r["measure"]: r for r in json.loads(result.stdout)}
    assert rows["query: cr_rate by month"]["unit"] == "s"
    assert 0 < rows["query: performance by year, all time"]["value"] < 60
    assert rows["record_metrics, 500 rows in one call"]["value"] > 0
    assert rows["record_metrics, 500 rows in one call"]["unit"] == "rows/s"
    assert rows["changed cells after recording"]["value"] > 0
    assert 5000 < rows["storage per metrics row (4 histograms)"]["value"] < 30000


def test_stats_performance_leaves_training_visits_out_unless_asked(recorded_url: str, tmp_path: Path) -> None:
    manifest = tmp_path / "patches-x1" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"visits": {"jbt122": {"split": "train", "stratum": "gc/F606W"}}}))
    before = run_cli("stats", "performance", "--by", "model", "--format", "json", url=recorded_url)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)[0]["n_exposures"] == 6
    assert "no training manifest recorded" in before.stderr

    result = run_cli(
        "stats",
        "training-splits",
        "deepcr-acs-wfc:1",
        "--manifest",
        str(manifest),
        "--format",
        "json",
        url=recorded_url,
    )
    assert result.returncode == 0, result.stderr
    (state,) = json.loads(result.stdout)
    assert (state["training_dataset"], state["train"], state["test"]) == ("patches-x1", 1, 0)

    default = run_cli("stats", "performance", "--by", "model", "--format", "json", url=recorded_url)
    assert default.returncode == 0, default.stderr
    (row,) = json.loads(default.stdout)
    assert (row["n_exposures"], row["splits"], row["truth"]) == (3, "unseen", "ok")
    note = default.stderr
    assert "pooled: split test+unseen of each model version; truth status ok" in note
    assert "--include-training" in note and "--truth-status ok,suspect" in note
    assert "training manifest of dataset patches-x1 (1 train" in note

    wide = run_cli(
        "stats", "performance", "--by", "model", "--include-training", "--format", "json", url=recorded_url
    )
    (row,) = json.loads(wide.stdout)
    assert (row["n_exposures"], row["splits"]) == (6, "train+unseen")
    assert "split train+validation+test+unseen" in wide.stderr

    statuses = run_cli(
        "stats", "performance", "--truth-status", "ok,suspect", "--format", "json", url=recorded_url
    )
    assert statuses.returncode == 0 and "truth status ok+suspect" in statuses.stderr
    bad = run_cli("stats", "performance", "--truth-status", "great", url=recorded_url)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    external = run_cli("stats", "training-splits", "deepcr-acs-wfc:9", "--external", url=recorded_url)
    assert external.returncode == 0, external.stderr
    assert "every visit counts as unseen" in external.stdout
