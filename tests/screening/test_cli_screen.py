"""`crlib screen` as a user runs it (subprocess, JSON output)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from astropy.io import fits


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_screen_json_on_real_and_edited_headers(shared_data: Path, tmp_path: Path) -> None:
    headers = shared_data / "acs_wfc_headers"
    moving = tmp_path / "jbt122x8q_flc.fits"
    shutil.copyfile(headers / "jbt122x8q_sample_flc_header.fits", moving)
    with fits.open(moving, mode="update") as hdus:
        hdus[0].header["MTFLAG"] = "T"
    files = [
        headers / "jbt122x8q_sample_flc_header.fits",
        headers / "j94f05bgq_flt_header_1x1.fits",
        headers / "2chipA.fits.gz",
        moving,
    ]
    result = run_cli("screen", "--json", *map(str, files))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["verdict"] for row in rows] == ["accept", "accept", "accept", "reject"]
    assert [row["rootname"] for row in rows] == ["jbt122x8q", "j94f05bgq", "j94f05bgq", "jbt122x8q"]
    assert set(rows[0]) >= {"file", "rootname", "verdict", "usable_for_training", "reasons"}
    assert rows[3]["reasons"][0] | {} == {
        "rule": "svm.mtflag",
        "keyword": "MTFLAG",
        "value": "T",
        "severity": "reject",
        "message": "MTFLAG=T: moving-target observation; stars do not stay fixed between exposures",
    }
    assert rows[1]["reasons"][0]["rule"] == "align.wcs_unaligned"


def test_screen_rejects_unknown_profile_in_one_line(shared_data: Path) -> None:
    result = run_cli("screen", "--instrument", "nicmos", str(shared_data / "acs_wfc_headers/2chipA.fits.gz"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "nicmos" in result.stderr


def test_bench_screen_reports_rate() -> None:
    result = run_cli("bench", "screen", "--n", "20")
    assert result.returncode == 0, result.stderr
    assert "screened 20 headers" in result.stdout and "headers/s" in result.stdout
