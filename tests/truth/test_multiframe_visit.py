"""Multi-frame truth end to end on simulated undithered (CR-SPLIT) visits, against the simulator's
injected CRs and against the drizzle truth of the same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crlib.cli.app import app, register_commands
from crlib.errors import ConfigError


@pytest.fixture(scope="module")
def crsplit_visit(tmp_path_factory: pytest.TempPathFactory):
    """A small undithered globular-cluster visit of 4 exposures (crowded: the hardest field)."""
    from crlib.simulate import simulate_visit

    root = tmp_path_factory.mktemp("crsplit")
    return simulate_visit(
        root, field_type="globular_cluster", exposures=4, size="small", seed=3, dither="none"
    )


def test_multiframe_truth_matches_the_injected_crs_and_the_drizzle_truth(crsplit_visit, tmp_path):
    from crlib.bench.truth_crosscheck import crosscheck_visit

    report = crosscheck_visit(Path(crsplit_visit.directory), tmp_path)
    multi, drizzle = report["multiframe"], report["drizzle"]
    assert set(multi["statuses"].values()) == {"ok"}, multi["reasons"]
    assert set(drizzle["statuses"].values()) == {"ok"}, drizzle["reasons"]
    # against the simulator's CRs (the truth targets)
    assert multi["recall_50e"] >= 0.95
    assert multi["false_positive_rate"] <= 1e-4
    assert multi["star_core_contamination"] <= 0.01
    # against driz_cr on the same files: the two methods flag the same CRs (up to edge pixels)
    agreement = report["agreement"]
    assert agreement["first_in_second_1px"] >= 0.95
    assert agreement["second_in_first_1px"] >= 0.95
    assert agreement["jaccard"] >= 0.8


def test_truth_products_record_the_method_and_its_settings(crsplit_visit, tmp_path):
    from astropy.io import fits

    from crlib.truth import build_visit_truth

    result = build_visit_truth(Path(crsplit_visit.directory), work_dir=tmp_path, method="multiframe")
    assert len(result.exposures) == 4
    first = result.exposures[0]
    assert first.method == "multiframe" and first.path is not None
    assert first.parameters["maxoffpx"] < 0.01  # undithered: every header WCS on one grid
    assert first.parameters["chip1_star_core_pixels"] > 1000  # the star-core gate was judged
    with fits.open(first.path) as hdul:
        assert hdul[0].header["METHOD"] == "multiframe"
        assert hdul[0].header["STATUS"] == first.status
        assert hdul[0].header["GROWSNR"] == 3.5


def test_hot_and_warm_pixels_are_not_valid_as_in_the_drizzle_truth(crsplit_visit, tmp_path):
    """The valid-pixel rule is the drizzle method's: a DQ flag other than the CR bits (here hot
    and warm pixels, 16/64, whose dark charge varies between frames) keeps a pixel out."""
    import numpy as np
    from astropy.io import fits

    from crlib.truth import build_visit_truth
    from crlib.truth.product import read_truth_product

    result = build_visit_truth(Path(crsplit_visit.directory), work_dir=tmp_path, method="multiframe")
    flcs = sorted(Path(crsplit_visit.directory).glob("*_flc.fits"))
    _, masks = read_truth_product(Path(result.exposures[0].path))
    flagged_somewhere = 0
    for extver, (_, valid) in masks.items():
        hot = np.logical_or.reduce([(fits.getdata(f, ("DQ", extver)) & (16 | 64)) > 0 for f in flcs])
        flagged_somewhere += int(hot.sum())
        assert not valid.astype(bool)[hot].any()
    assert flagged_somewhere > 100


def test_dithered_visit_is_refused_with_the_reason(truth_archive, tmp_path):
    """The stack statistics on dithered exposures would flag every star: refuse, name the fix."""
    from crlib.truth import build_visit_truth

    visit = next(v for v in truth_archive.visits if v.field_type == "extragalactic")
    result = build_visit_truth(Path(visit.directory), work_dir=tmp_path, method="multiframe")
    assert {r.status for r in result.exposures} == {"failed"}
    reason = result.exposures[0].reasons[0]
    assert "dithered" in reason and "drizzle method" in reason
    assert not list(tmp_path.rglob("*_crtruth.fits"))


def test_simulate_and_truth_commands_for_a_crsplit_visit(tmp_path):
    register_commands()
    runner = CliRunner()
    simulated = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(tmp_path / "archive"),
            "--visits",
            "1",
            "--exposures",
            "3",
            "--field-type",
            "resolved_galaxy",
            "--dither",
            "none",
        ],
    )
    assert simulated.exit_code == 0, simulated.output
    visit_dir = next((tmp_path / "archive").glob("*/truth/visit.json")).parent.parent
    truth = runner.invoke(
        app,
        ["truth", str(visit_dir), "--method", "multiframe", "--work-dir", str(tmp_path / "w"), "--json"],
    )
    assert truth.exit_code == 0, truth.output
    payload = json.loads(truth.stdout)
    assert payload["method"] == "multiframe"
    assert [e["status"] for e in payload["exposures"]] == ["ok"] * 3

    refused = runner.invoke(app, ["simulate", "--out", str(tmp_path / "b"), "--dither", "spiral"])
    assert refused.exit_code != 0  # `crlib` turns the ConfigError into a one-line message
    assert isinstance(refused.exception, ConfigError)
    assert "dither must be one of" in str(refused.exception)
