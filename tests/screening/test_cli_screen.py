"""`crlib screen` as a user runs it (subprocess, JSON output)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_screen_json_on_simulated_and_damaged_files(
    simulated_flcs: tuple[Path, Path], shared_data: Path, tmp_path: Path
) -> None:
    good, other = simulated_flcs
    moving = tmp_path / other.name
    shutil.copyfile(other, moving)
    with fits.open(moving, mode="update") as hdus:
        hdus[0].header["MTFLAG"] = "T"
    flt = tmp_path / good.name.replace("_flc", "_flt")
    shutil.copyfile(good, flt)
    nan = tmp_path / "j9c7a309q_flc.fits"
    shutil.copyfile(good, nan)
    with fits.open(nan, mode="update") as hdus:
        hdus[0].header["ROOTNAME"] = "j9c7a309q"
        hdus["SCI", 1].data[:] = np.nan
    header_only = shared_data / "acs_wfc_headers" / "jbt122x8q_sample_flc_header.fits"
    files = [flt, good, moving, nan, header_only]
    result = run_cli("screen", "--json", *map(str, files))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["file"] for row in rows] == [str(f) for f in files]
    assert [row["verdict"] for row in rows] == ["reject", "accept", "reject", "reject", "reject"]
    assert [row["reasons"][0]["rule"] for row in rows] == [
        "file.duplicate_rootname",
        "align.wcs_unaligned",
        "svm.mtflag",
        "data.all_nan",
        "data.empty",
    ]
    assert set(rows[0]) >= {"file", "rootname", "verdict", "usable_for_training", "reasons"}
    assert rows[0]["rootname"] == rows[1]["rootname"]
    assert f"as {good}, which is screened instead" in rows[0]["reasons"][0]["message"]
    assert rows[2]["reasons"][0] | {} == {
        "rule": "svm.mtflag",
        "keyword": "MTFLAG",
        "value": "T",
        "severity": "reject",
        "message": "MTFLAG=T: moving-target observation; stars do not stay fixed between exposures",
    }
    assert rows[3]["reasons"][0]["message"] == f"{nan}: SCI,1 is entirely NaN/Inf: download it again"
    assert rows[3]["reasons"][0]["keyword"] == "SCI,1"


def test_screen_rejects_unknown_profile_in_one_line(shared_data: Path) -> None:
    result = run_cli("screen", "--instrument", "nicmos", str(shared_data / "acs_wfc_headers/2chipA.fits.gz"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "nicmos" in result.stderr


def test_bench_screen_reports_rate() -> None:
    result = run_cli("bench", "screen", "--n", "20")
    assert result.returncode == 0, result.stderr
    assert "screened 20 headers" in result.stdout and "headers/s" in result.stdout
