"""``crlib align`` and ``crlib truth`` from the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from statistics import median

import pytest
from typer.testing import CliRunner

from crlib.bench.truth_report import format_report
from crlib.cli.app import app, register_commands


def test_align_and_truth_commands(truth_archive, tmp_path):
    register_commands()
    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    runner = CliRunner()
    aligned = runner.invoke(
        app, ["align", str(visit.directory), "--no-query", "--work-dir", str(tmp_path / "a"), "--json"]
    )
    assert aligned.exit_code == 0, aligned.output
    record = json.loads(aligned.stdout)
    assert record["status"] == "aligned_relative"
    assert record["wcsname"].endswith("FIT_REL_NONE")

    truth = runner.invoke(
        app, ["truth", str(visit.directory), "--no-query", "--work-dir", str(tmp_path / "t"), "--json"]
    )
    assert truth.exit_code in (0, 2), truth.output
    payload = json.loads(truth.stdout)
    assert {e["rootname"] for e in payload["exposures"]} == {e.rootname for e in visit.exposures}
    for exposure in payload["exposures"]:
        assert Path(exposure["path"]).name == f"{exposure['rootname']}_crtruth.fits"
        assert exposure["status"] in ("ok", "suspect")


def test_truth_command_rejects_missing_directory(tmp_path):
    register_commands()
    result = CliRunner().invoke(app, ["truth", str(tmp_path / "nope")])
    assert result.exit_code != 0


@pytest.mark.slow
def test_bench_truth_runs_one_field_type_and_scores_it(tmp_path):
    """``crlib bench truth --field-type`` simulates and scores only that field type."""
    register_commands()
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "truth",
            "--size",
            "small",
            "--field-type",
            "extragalactic",
            "--out",
            str(tmp_path),
            # one timed run per tool (the default, 2 alternated, is tests/bench/test_truth.py's)
            "--repeats",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [v["field_type"] for v in report["visits"]] == ["extragalactic"]
    visit = report["visits"][0]
    assert visit["recall_50e"] > 0.9
    assert visit["false_positive_rate"] < 1e-3
    assert not (tmp_path / "archive" / "globular_cluster").exists()

    # fair timing: both tools timed after an untimed warm-up (the default), medians compared,
    # nothing imported inside a timer
    assert visit["truth_seconds"] > 0 and visit["bare_astrodrizzle_seconds"] > 0
    assert visit["order"] == ["crlib", "bare"] and visit["warmup"] is True
    assert [r["tool"] for r in visit["runs"]] == visit["order"]
    for tool, key in (("crlib", "truth_seconds"), ("bare", "bare_astrodrizzle_seconds")):
        assert visit[key] == pytest.approx(median(r["seconds"] for r in visit["runs"] if r["tool"] == tool))
    assert visit["time_ratio"] == pytest.approx(visit["truth_seconds"] / visit["bare_astrodrizzle_seconds"])
    assert all(r["imported_while_timed"] == [] for r in visit["runs"])
    assert all(len(r["load_average"]) == 3 for r in visit["runs"])
    # by default every run is a whole process: its own wall and CPU seconds, read by wait4
    assert report["timing"] == visit["timing"] == "process"
    assert all(r["cpu_seconds"] > 0 for r in visit["runs"])
    assert "each run a whole process" in format_report(report) and "CPU-s" in format_report(report)
    # the same AstroDrizzle call: every keyword, the parameter set and the sky method really used
    crlib_parameters, bare_parameters = visit["parameters"]["crlib"], visit["parameters"]["bare"]
    assert visit["parameters_match"] and visit["parameter_differences"] == {}
    # the truth stage's default engine runs drizzlepac's steps in memory: only that keyword differs
    assert report["engine"] == visit["engine"] == "inmemory"
    assert visit["engine_parameters"] == {"in_memory": True, "num_cores": 1}
    assert (crlib_parameters.pop("in_memory"), bare_parameters.pop("in_memory")) == (True, False)
    # bare AstroDrizzle at its best: every core (drizzlepac starts at most one process per exposure)
    cores = min(os.cpu_count() or 1, 3)
    assert (crlib_parameters.pop("num_cores"), bare_parameters.pop("num_cores")) == (1, cores)
    assert crlib_parameters == bare_parameters
    assert crlib_parameters["skymethod"] == crlib_parameters["skymethod_used"] == "match"
    assert crlib_parameters["driz_combine"] is False and crlib_parameters["driz_cr"] is True
    assert visit["threads"]["astrodrizzle_num_cores"] == {"crlib": 1, "bare": cores}
    # both engines on the stage's aligned inputs: the same masks, pixel for pixel
    engines = visit["engines"]
    assert engines["passed"] and engines["differing_pixels"] == 0 and engines["cr_jaccard"] == 1.0
    assert len(engines["chips"]) == 6 and all(c["cr_pixels_inmemory"] > 0 for c in engines["chips"])
    assert engines["problems"] == {"astrodrizzle": [], "inmemory": []}
    assert "engines on the same aligned inputs: pixel agreement 1.000000" in format_report(report)
    assert visit["threads"]["cpu_count"] >= 1 and len(report["load_average_start"]) == 3


def test_bench_truth_num_cores_goes_to_both_tools(tmp_path):
    """``--num-cores`` sets AstroDrizzle's processes for the truth stage and bare AstroDrizzle alike."""
    register_commands()
    args = ["bench", "truth", "--size", "small", "--field-type", "extragalactic", "--out", str(tmp_path)]
    options = ["--num-cores", "2", "--repeats", "1", "--no-warmup", "--engine", "astrodrizzle", "--json"]
    result = CliRunner().invoke(app, [*args, *options, "--timing", "in-process"])
    assert result.exit_code == 0, result.output
    (visit,) = json.loads(result.stdout)["visits"]
    # in-process timing: both calls timed in the test's own process, no child's CPU seconds
    assert visit["timing"] == "in_process" and all(r["cpu_seconds"] is None for r in visit["runs"])
    assert visit["engine"] == "astrodrizzle" and visit["engine_parameters"] == {}
    assert visit["order"] == ["crlib", "bare"] and visit["warmup"] is False
    assert visit["threads"]["astrodrizzle_num_cores"] == {"crlib": 2, "bare": 2}
    assert visit["parameters_match"], visit["parameter_differences"]


def test_bench_truth_rejects_unknown_field_type(tmp_path):
    register_commands()
    result = CliRunner().invoke(app, ["bench", "truth", "--field-type", "nebula", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown field type(s) nebula" in result.output


def test_bench_truth_multiframe_compares_both_methods_on_a_crsplit_visit(tmp_path):
    """``crlib bench truth --method multiframe`` simulates undithered visits and scores both methods."""
    register_commands()
    runner = CliRunner()
    args = ["bench", "truth", "--method", "multiframe", "--size", "small", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--exposures", "3", "--field-type", "extragalactic", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (visit,) = report["visits"]
    assert visit["field_type"] == "extragalactic"
    truth_json = next((tmp_path / "archive-crsplit" / "extragalactic").glob("*/truth/visit.json"))
    assert json.loads(truth_json.read_text())["dither_pattern"] == "NONE (CR-SPLIT)"
    assert set(visit["multiframe"]["statuses"].values()) == {"ok"}
    assert visit["multiframe"]["recall_50e"] > 0.9 and visit["drizzle"]["recall_50e"] > 0.9
    assert visit["agreement"]["first_in_second_1px"] > 0.9
    assert visit["agreement"]["second_in_first_1px"] > 0.9

    refused = runner.invoke(app, [*args, "--exposures", "2"])
    assert refused.exit_code == 2 and "needs >= 3 exposures" in refused.output
