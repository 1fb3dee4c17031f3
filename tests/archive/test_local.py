"""LocalArchive over a directory in the crlib.simulate layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crlib.archive import JsonWatermarkStore, LocalArchive, group_by_set, poll_proposal, poll_released
from crlib.archive.poll import commit_poll
from crlib.errors import InputDataError
from crlib.profiles import WFC3_UVIS


def test_local_polls_follow_the_watermark(local_archive_dir: Path, facts: Any, tmp_path: Path) -> None:
    archive = LocalArchive(local_archive_dir)
    store = JsonWatermarkStore.under(tmp_path)
    first = poll_released(archive, store, until_mjd=60005.0)
    assert sorted(first.visits) == sorted(facts.visits_a)
    commit_poll(store, first)
    second = poll_released(archive, store, until_mjd=60100.0)
    assert list(second.visits) == list(facts.visits_b)
    assert first.observations[0].product_uri.startswith(str(local_archive_dir))
    assert first.observations[0].checksum and first.observations[0].checksum.startswith("md5:")
    assert first.observations[0].field_type == "globular_cluster"


def test_instrument_profile_filters_rows(
    local_archive_dir: Path, visit_adder: Callable[..., list[str]]
) -> None:
    visit_adder(
        local_archive_dir, visit="ibc301", proposal_id=11911, release_mjd=60000.0, instrument="WFC3/UVIS"
    )
    acs = LocalArchive(local_archive_dir)
    uvis = LocalArchive(local_archive_dir, profile=WFC3_UVIS)
    assert "ibc301" not in poll_proposal(acs, 11911).visits
    assert list(poll_proposal(uvis, 11911).visits) == ["ibc301"]


def test_sets_group_by_visit_detector_filter(local_archive_dir: Path, facts: Any) -> None:
    observations = LocalArchive(local_archive_dir).released_between(0, 70000)
    sets = group_by_set(observations)
    assert list(sets) == [(visit, "ACS/WFC", facts.filters[visit]) for visit in facts.all_visits]
    assert all(len(members) == 2 for members in sets.values())


def test_missing_or_foreign_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"observations\.json.*not found") as caught:
        LocalArchive(tmp_path).released_between(0, 1)
    # the setting every command reads, and the option some commands have (not an invented one)
    assert "CRLIB_ARCHIVE=local:DIR" in str(caught.value) and "point --archive" not in str(caught.value)
    assert "no directory" not in str(caught.value)
    with pytest.raises(InputDataError, match=f"there is no directory {tmp_path / 'missing'}"):
        LocalArchive(tmp_path / "missing").released_between(0, 1)
    (tmp_path / "observations.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(InputDataError, match="crlib-local-archive/1"):
        LocalArchive(tmp_path).proposal_observations(1)


def test_crlib_run_names_the_setting_for_a_missing_local_archive(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != "CRLIB_DATABASE_URL"},
        "CRLIB_DATA_ROOT": str(tmp_path / "d"),
        "CRLIB_ARCHIVE": f"local:{tmp_path / 'nonexistent'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "crlib", "run"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 1
    assert "local archive manifest not found" in result.stderr
    assert "set CRLIB_ARCHIVE=local:DIR" in result.stderr  # `crlib run` has no --archive option
