"""The fake MAST reproduces the recorded MAST response shapes and injects faults reproducibly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from crlib.harness.fake_mast import FakeMast, FaultPlan, caom_columns_config


def test_columns_config_matches_the_recorded_one(shared_data: Path) -> None:
    recorded = json.loads((shared_data / "mast_api/astroquery_mast/columnsconfig.json").read_text())
    ours = caom_columns_config()
    for name, entry in ours.items():
        for key in ("vot.datatype", "type"):
            assert recorded[name].get(key) == entry.get(key), name
        assert ("separator" in entry) == ("separator" in recorded[name]), name


def test_invoke_response_has_the_recorded_shape(shared_data: Path, local_archive_dir: Path) -> None:
    recorded = json.loads((shared_data / "mast_api/astroquery_mast/caom.json").read_text())
    request = {
        "service": "Mast.Caom.Filtered",
        "format": "json",
        "pagesize": 4,
        "page": 1,
        "params": {"columns": "*", "filters": [{"paramName": "proposal_id", "values": ["12546"]}]},
    }
    with FakeMast(local_archive_dir) as mast:
        response = requests.post(
            f"{mast.url}/api/v0/invoke", data="request=" + quote(json.dumps(request)), timeout=5
        )
    body = response.json()
    assert set(body) == set(recorded)
    assert set(body["paging"]) == set(recorded["paging"])
    assert body["paging"]["rowsFiltered"] == 4 and body["paging"]["pagesFiltered"] == 1
    recorded_types = {f["name"]: f["type"] for f in recorded["fields"]}
    for field in body["fields"]:
        if field["name"] in recorded_types:
            assert field["type"] == recorded_types[field["name"]]
    assert all(not name.startswith("crlib_") for row in body["data"] for name in row)


def test_faults_are_seeded_and_counted(local_archive_dir: Path, facts: Any) -> None:
    visit = facts.visits_a[0]
    name = f"{facts.rootnames[visit][0]}_flc.fits"
    plan = FaultPlan(fraction=1.0, kinds=("503",), seed=1)
    with FakeMast(local_archive_dir, faults=plan) as mast:
        url = f"{mast.url}/api/v0.1/Download/file?uri=mast:HST/product/{name}"
        assert requests.get(url, timeout=5).status_code == 503
        mast.set_faults(FaultPlan(fraction=1.0, kinds=("truncate",), seed=1))
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url, timeout=5)
        mast.set_faults(FaultPlan(fraction=1.0, kinds=("timeout",), stall_s=1.0))
        with pytest.raises(requests.ReadTimeout):
            requests.get(url, timeout=0.3)
        mast.set_faults(FaultPlan())
        assert len(requests.get(url, timeout=5).content) == (local_archive_dir / visit / name).stat().st_size
        assert mast.counters.faults == {"503": 1, "truncate": 1, "timeout": 1}
        assert mast.counters.downloads_completed[name] == 1
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultPlan(kinds=("gremlins",))
