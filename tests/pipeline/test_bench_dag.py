"""``crlib bench dag --size small``: the same visit through the stages directly and through Airflow.

Runs the real command (a subprocess): simulation, a direct run in a spawned process, ``airflow dags
test`` against a freshly migrated metadata database, scratch results databases on the test
PostgreSQL server (dropped afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

STAGES = ["poll", "fetch", "screen", "truth", "exposures", "infer", "score", "summary"]


def test_bench_dag_small_reports_every_stage(
    database_url: str, monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    from sqlalchemy import create_engine, text

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_THREADS", "2")
    monkeypatch.setenv("CRLIB_DEVICE", "cpu")
    result = subprocess.run(
        [sys.executable, "-m", "crlib", "bench", "dag", "--size", "small", "--exposures", "2", "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["dag_id"] == "crlib_nightly_ingest" and report["size"] == "small"
    rows = {row["stage"]: row for row in report["rows"]}
    assert list(rows)[: len(STAGES)] == STAGES
    mapped = {"infer": "2/2", "score": "2/2"}
    for stage in STAGES:
        row = rows[stage]
        assert row["calls/tasks"] == mapped.get(stage, "1/1"), row
        assert row["dag_s"] > 0 and row["direct_s"] >= 0, row
        assert row["overhead_s"] == pytest.approx(row["dag_s"] - row["direct_s"], abs=2e-3), row
    # Drizzle truth and inference dominate both runs; the whole-run figures add up.
    total = rows["all stages (sum)"]
    assert total["direct_s"] == pytest.approx(sum(rows[s]["direct_s"] for s in STAGES), abs=0.01)
    assert total["dag_s"] == pytest.approx(sum(rows[s]["dag_s"] for s in STAGES), abs=0.01)
    command = rows["process / `airflow dags test` command"]
    assert command["dag_s"] >= rows["run wall (first start to last end)"]["dag_s"] > 0
    # Both runs recorded the same thing: one visit, two exposures with truth, both scored.
    assert report["same_outcome"] is True, report
    assert report["outcome_dag"]["scored"] == 2 and len(report["outcome_dag"]["truth"]) == 2
    assert len(report["load_before"]) == 3 and report["cpu_count"] >= 1
    # The scratch databases are gone.
    engine = create_engine(postgres_server_url)
    with engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM pg_database WHERE datname LIKE 'crlib_bench_%'")
        ).scalar_one()
    engine.dispose()
    assert left == 0
