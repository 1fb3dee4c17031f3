"""``crlib align`` and ``crlib truth`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

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
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [v["field_type"] for v in report["visits"]] == ["extragalactic"]
    visit = report["visits"][0]
    assert visit["recall_50e"] > 0.9
    assert visit["false_positive_rate"] < 1e-3
    assert visit["bare_astrodrizzle_seconds"] > 0
    assert not (tmp_path / "archive" / "globular_cluster").exists()


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
