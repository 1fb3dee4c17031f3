"""Visits observed in several filters: truth per filter (``crlib.truth.byfilter``, ``crlib truth``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crlib.cli.app import app, register_commands
from crlib.errors import InputDataError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture(scope="module")
def three_filter_visit(tmp_path_factory: pytest.TempPathFactory):
    """One small globular-cluster visit of 5 exposures in F606W (2), F814W (2) and F435W (1)."""
    from crlib.simulate import simulate_archive
    from crlib.simulate.effects import SimEffects

    archive = simulate_archive(
        tmp_path_factory.mktemp("multi-filter"),
        visits=1,
        exposures=5,
        field_type="globular_cluster",
        filters=("F606W", "F814W", "F435W"),
        size="small",
        seed=5,
        effects=SimEffects(filters_per_visit=3),
    )
    return archive.visits[0]


def test_exposures_are_grouped_by_the_filter_in_their_headers(three_filter_visit) -> None:
    from crlib.truth.byfilter import exposures_by_filter

    groups = exposures_by_filter(three_filter_visit.directory)
    rootnames = [e.rootname for e in three_filter_visit.exposures]
    # the simulator's blocks: the visit's filters in order, first block longest
    expected = {"F606W": rootnames[0:2], "F814W": rootnames[2:4], "F435W": rootnames[4:5]}
    assert {name: [p.name.split("_")[0] for p in paths] for name, paths in groups.items()} == expected


def test_one_truth_run_refuses_a_directory_of_several_filters(three_filter_visit, tmp_path: Path) -> None:
    from crlib.truth import build_visit_truth

    with pytest.raises(InputDataError) as raised:
        build_visit_truth(three_filter_visit.directory, work_dir=tmp_path / "w")
    message = str(raised.value)
    assert "3 filters" in message and "F606W" in message and "F814W" in message and "F435W" in message
    assert "per filter" in message  # the fix


def test_crlib_truth_builds_each_filter_apart(three_filter_visit, tmp_path: Path) -> None:
    register_commands()
    out = tmp_path / "truth"
    result = CliRunner().invoke(
        app,
        [
            "truth",
            str(three_filter_visit.directory),
            "--no-query",
            "--work-dir",
            str(tmp_path / "work"),
            "--out-dir",
            str(out),
            "--json",
        ],
    )
    # the lone F435W exposure cannot get drizzle truth: exit 2 (an exposure failed), the others ok
    assert result.exit_code == 2, result.output
    runs = json.loads(result.stdout)
    assert len(runs) == 3
    by_root = {e["rootname"]: e for run in runs for e in run["exposures"]}
    assert set(by_root) == {e.rootname for e in three_filter_visit.exposures}
    members = sorted(len(run["exposures"]) for run in runs)
    assert members == [1, 2, 2]
    for run in runs:
        assert run["visit"] == three_filter_visit.visit  # products named after the visit, not the filter
        statuses = {e["status"] for e in run["exposures"]}
        if len(run["exposures"]) == 1:
            (lone,) = run["exposures"]
            assert statuses == {"failed"}
            assert "at least 2" in " ".join(lone["reasons"])
        else:
            assert statuses == {"ok"}, run["exposures"]
            assert run["alignment"]["status"].startswith("aligned")
            for exposure in run["exposures"]:
                assert Path(exposure["path"]) == out / f"{exposure['rootname']}_crtruth.fits"
                assert Path(exposure["path"]).exists()
