"""The main job a newcomer runs: it must work twice in a row on the same data root, and what its
summary reports must be what ``crlib stats`` reports right after it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

TPR_LINE = re.compile(r"^  (\w+)\s+([\d.]+)\s*/\s*([\d.]+)\s+\((\d+) exposures\)$", flags=re.M)


def _crlib(*args: str) -> list[dict]:
    """Run the crlib CLI in a subprocess (the environment names the demo's data root and database)."""
    result = subprocess.run(
        [sys.executable, "-m", "crlib", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_demo_processes_new_visits_on_every_run(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from crlib.config import load_settings
    from crlib.harness.demo import run_demo

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_THREADS", "2")
    settings = load_settings()
    for runs in (1, 2):
        summary = run_demo(settings, seed=7, airflow=False)
        # Three clean visits, one damaged exposure planted in the first, one 30 s exposure alone.
        assert re.search(r"^Visits 4, exposures 11, accepted 10$", summary, flags=re.M), summary
        assert summary.count("(3 exposures)") == 3, summary  # TPR lines for all three field types
        # The planted problems are listed with their reasons; the run says it is partial.
        assert re.search(r"^Run: demo__\S+ \(crlib_cli_run\): partial$", summary, flags=re.M), summary
        assert re.search(r"^  1 of 11 exposure\(s\) failed \(1 at screen\)$", summary, flags=re.M), summary
        quarantined = re.findall(
            r"^  quarantined (\w+) \(damaged file, planted\): (.*)$", summary, flags=re.M
        )
        assert len(quarantined) == 1 and "SCI,1" in quarantined[0][1], summary
        short = r"^  accepted \w+, not for training: EXPTIME=30.0 s < 100 s"
        assert re.search(short, summary, flags=re.M), summary
        assert "no truth for" in summary and "suspect" not in summary, summary

        # The summary matches `crlib stats` right after the run. Both runs simulate the same
        # rootnames (same seed), so the database holds exactly this run's nine exposures.
        printed = {m[0]: (float(m[1]), float(m[2]), int(m[3])) for m in TPR_LINE.findall(summary)}
        assert set(printed) == {"globular_cluster", "extragalactic", "resolved_galaxy"}, summary
        stats = {
            row["field_type"]: row
            for row in _crlib("stats", "performance", "--by", "field_type", "--format", "json")
        }
        assert set(stats) == set(printed)
        for field, (low, high, count) in printed.items():
            assert stats[field]["n_exposures"] == count
            assert abs(low - 100 * stats[field]["tpr_at_fpr_0.0005"]) <= 0.006, (field, low, stats[field])
            assert abs(high - 100 * stats[field]["tpr_at_fpr_0.005"]) <= 0.006, (field, high, stats[field])
        pipeline = [
            r for r in _crlib("stats", "pipeline", "--format", "json") if r["dag_id"] == "crlib_cli_run"
        ]
        assert "(crlib_cli_run)" in summary
        assert sum(r["runs"] for r in pipeline) == runs
        assert sum(r["partial"] for r in pipeline) == runs and sum(r["succeeded"] for r in pipeline) == 0
    assert len(list((settings.data_root / "demo").glob("archive-*"))) == 1
