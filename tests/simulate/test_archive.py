"""The local archive layout, observation table, growth, determinism and bad input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from crlib.errors import ConfigError, CrlibError, InputDataError
from crlib.profiles import FIELD_TYPES
from crlib.simulate import simulate_archive, simulate_visit
from crlib.simulate.programs import PROGRAM_VISITS

CAOM_COLUMNS = {
    "obs_id", "obsid", "proposal_id", "instrument_name", "filters", "t_min", "t_max", "t_exptime",
    "t_obs_release", "target_name", "s_ra", "s_dec", "obs_collection", "dataproduct_type", "intentType",
    "calib_level", "dataURL", "crlib_visit", "crlib_field_type",
}  # fmt: skip
PRODUCT_COLUMNS = {
    "obsID", "obs_id", "productFilename", "dataURI", "productSubGroupDescription", "productType",
    "calib_level", "size", "md5", "crlib_path",
}  # fmt: skip


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_archive_layout_and_observation_table(small_archive) -> None:
    table = json.loads(small_archive.observations_path.read_text())
    assert table["schema"] == "crlib-local-archive/1"
    observations, products = table["observations"], table["products"]
    exposures = [e for v in small_archive.visits for e in v.exposures]
    assert len(observations) == len(products) == len(exposures) == 6
    assert [v.field_type for v in small_archive.visits] == ["globular_cluster", "extragalactic"]
    for row, product in zip(observations, products, strict=True):
        assert set(row) == CAOM_COLUMNS and set(product) == PRODUCT_COLUMNS
        assert row["instrument_name"] == "ACS/WFC" and row["obs_collection"] == "HST"
        assert row["obsid"].isdigit() and row["obsid"] == product["obsID"]
        assert row["t_min"] < row["t_max"] < row["t_obs_release"]
        path = small_archive.root / product["crlib_path"]
        assert path.name == product["productFilename"] == f"{row['obs_id']}_flc.fits"
        assert product["size"] == path.stat().st_size and product["md5"] == _md5(path)
        assert product["dataURI"] == f"mast:HST/product/{path.name}"
        assert (path.parent / "truth" / f"{row['obs_id']}_simtruth.fits").is_file()
    for visit in small_archive.visits:
        assert (visit.directory / "truth" / "visit.json").is_file()
        assert (visit.proposal_id, visit.visit[4:6]) in PROGRAM_VISITS[visit.field_type]
        assert 0.3 <= visit.pointing_error_px <= 1.6
        for exposure in visit.exposures:
            assert re.fullmatch(r"j[0-9a-z]{3}[0-9a-z]{2}[0-9a-z]{2}q", exposure.rootname)
            assert exposure.rootname[:6] == visit.visit
    releases = [v["t_obs_release"] for v in observations]
    assert releases == sorted(releases)


def test_simulating_again_adds_visits_with_later_release_dates(tmp_path: Path) -> None:
    first = simulate_archive(tmp_path, visits=1, exposures=2, field_type="extragalactic", seed=4)
    before = json.loads(first.observations_path.read_text())["observations"]
    second = simulate_archive(tmp_path, visits=1, exposures=2, field_type="extragalactic", seed=4)
    after = json.loads(second.observations_path.read_text())["observations"]
    assert len(second.visits) == 2 and len(after) == 4
    old_ids = {row["obs_id"] for row in before}
    new_rows = [row for row in after if row["obs_id"] not in old_ids]
    assert len(new_rows) == 2
    assert min(r["t_obs_release"] for r in new_rows) > max(r["t_obs_release"] for r in before)
    assert second.visits[0].visit != second.visits[1].visit


def test_mixed_cycles_field_types_and_filters(tmp_path: Path) -> None:
    calls = []
    archive = simulate_archive(
        tmp_path,
        visits=3,
        exposures=1,
        filters=("F435W", "F814W"),
        seed=2,
        progress=lambda message, done, total: calls.append((done, total)),
    )
    assert [v.field_type for v in archive.visits] == list(FIELD_TYPES)
    assert [v.filter for v in archive.visits] == ["F435W", "F814W", "F435W"]
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_same_seed_gives_identical_files_and_different_seed_differs(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 9), ("b", 9), ("c", 10)):
        archive = simulate_archive(
            tmp_path / name, visits=1, exposures=2, field_type="globular_cluster", seed=seed
        )
        runs[name] = {
            str(p.relative_to(archive.root)): _md5(p) for p in sorted(archive.root.rglob("*")) if p.is_file()
        }
    assert runs["a"] == runs["b"]
    flc = [k for k in runs["a"] if k.endswith("_flc.fits")]
    assert flc and all(runs["a"][k] != runs["c"].get(k) for k in flc)


def test_simulate_visit_writes_one_visit_without_touching_the_table(tmp_path: Path) -> None:
    visit = simulate_visit(tmp_path, field_type="resolved_galaxy", exposures=2, seed=1, proposal_id=10775)
    assert (
        visit.proposal_id == 10775 and visit.visit == "j8bb01"
    )  # base-36 program code of 10775, first free visit
    assert len(visit.exposures) == 2 and all(e.path.is_file() for e in visit.exposures)
    assert not (tmp_path / "observations.json").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"field_type": "spiral_arm"}, "field type"),
        ({"visits": 0}, "visits"),
        ({"exposures": 0}, "exposures"),
        ({"exposures": 9}, "exposures"),
        ({"filters": ("F999W",)}, "filter"),
        ({"size": "huge"}, "size"),
        ({"seed": -1}, "seed"),
        ({"exptime_s": 0.0}, "exposure time"),
    ],
)
def test_bad_parameters_raise_config_errors(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate_archive(tmp_path / "never", **options)
    assert not (tmp_path / "never").exists()


def test_unwritable_directory_is_a_clear_input_error() -> None:
    with pytest.raises(InputDataError, match="cannot write the archive directory") as caught:
        simulate_archive(Path("/proc/crlib-cannot-write-here"))
    assert isinstance(caught.value, CrlibError)
