"""`crlib poll` and `crlib fetch` as a user runs them (subprocess), on a local archive and the fake MAST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from crlib.harness.fake_mast import FakeMast, FaultPlan


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=180,
    )


def test_poll_then_fetch_local_archive(local_archive_dir: Path, facts: Any) -> None:
    archive = f"local:{local_archive_dir}"
    first = run_cli("poll", "--archive", archive, "--until", "2030-01-01", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["n_visits"] == 3 and summary["n_exposures"] == 6 and summary["watermark_mjd"] > 60010
    again = json.loads(run_cli("poll", "--archive", archive, "--until", "2030-01-02", "--json").stdout)
    assert again["n_visits"] == 0
    by_proposal = json.loads(run_cli("poll", "--archive", archive, "--proposal", "12546", "--json").stdout)
    assert sorted(by_proposal["visits"]) == sorted(facts.visits_a)
    fetched = run_cli("fetch", "--archive", archive, "--json")  # latest manifest = the proposal poll
    assert fetched.returncode == 0, fetched.stderr
    report = json.loads(fetched.stdout)
    assert report["downloaded"] == 4 and report["failed"] == 0
    data_root = Path(os.environ["CRLIB_DATA_ROOT"])
    visit = facts.visits_a[0]
    assert sorted(p.name for p in (data_root / "archive" / visit).iterdir()) == [
        f"{rootname}_flc.fits" for rootname in facts.rootnames[visit]
    ]


def test_poll_and_fetch_against_faulty_fake_mast(local_archive_dir: Path) -> None:
    plan = FaultPlan(fraction=0.3, kinds=("503", "truncate", "wrong_length"), seed=4)
    with FakeMast(local_archive_dir, faults=plan) as mast:
        env = {"CRLIB_ARCHIVE": "mast", "CRLIB_MAST_SERVER": mast.url}
        polled = run_cli(
            "poll", "--since", "2000-01-01", "--json", "--backoff", "0.01", "--timeout", "2", **env
        )
        assert polled.returncode == 0, polled.stderr
        assert json.loads(polled.stdout)["n_visits"] == 3
        fetched = run_cli("fetch", "--backoff", "0.01", "--timeout", "2", "--retries", "10", **env)
        assert fetched.returncode == 0, fetched.stderr
        assert "6 downloaded" in fetched.stdout and "0 failed" in fetched.stdout
        assert sum(mast.counters.faults.values()) > 0


def test_fetch_without_a_poll_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("fetch", "--archive", f"local:{tmp_path}")
    assert result.returncode != 0
    assert "no poll manifest" in result.stderr and "crlib poll" in result.stderr
    assert "Traceback" not in result.stderr
