"""MastArchive (real astroquery client) against the fake MAST on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crlib.archive import JsonWatermarkStore, MastArchive, RetryPolicy, fetch_observations, poll_proposal
from crlib.archive.poll import commit_poll, poll_released
from crlib.harness.fake_mast import FakeMast, FaultPlan

FAST = RetryPolicy(
    max_attempts=8, backoff_base_s=0.01, backoff_max_s=0.05, read_timeout_s=1.0, connect_timeout_s=1.0, seed=3
)


def test_polls_find_every_visit_then_none_then_only_the_new_one(
    local_archive_dir: Path, facts: Any, visit_adder: Callable[..., list[str]], tmp_path: Path
) -> None:
    store = JsonWatermarkStore(tmp_path / "state" / "watermarks.json")
    with FakeMast(local_archive_dir) as mast:
        archive = MastArchive(server=mast.url, policy=FAST)
        first = poll_released(archive, store, until_mjd=60100.0)
        assert sorted(first.visits) == facts.all_visits
        assert len(first.observations) == 6
        assert all(obs.product_filename.endswith("_flc.fits") for obs in first.observations)
        for visit, members in first.visits.items():
            assert [obs.rootname for obs in members] == list(facts.rootnames[visit])
            assert {obs.filter for obs in members} == {facts.filters[visit]}
        commit_poll(store, first)

        second = poll_released(archive, store, until_mjd=60101.0)
        assert second.observations == ()
        commit_poll(store, second)

        new = visit_adder(
            local_archive_dir, visit="jcd201", proposal_id=15000, release_mjd=60101.5, exposures=3
        )
        third = poll_released(archive, store, until_mjd=60102.0)
        assert list(third.visits) == ["jcd201"]
        assert [obs.rootname for obs in third.observations] == new
        # The real astroquery client went through the fake's portal: 3 filtered queries + 2 product lists.
        assert mast.counters.requests["/api/v0/invoke"] == 5


def test_poll_by_proposal_finds_all_its_visits(local_archive_dir: Path, facts: Any) -> None:
    with FakeMast(local_archive_dir) as mast:
        archive = MastArchive(server=mast.url, policy=FAST)
        result = poll_proposal(archive, 12546)
        assert sorted(result.visits) == sorted(facts.visits_a)
        assert all(obs.proposal_id == 12546 for obs in result.observations)
        assert poll_proposal(archive, 99999).observations == ()


def test_flt_is_used_where_no_flc_exists(
    local_archive_dir: Path, visit_adder: Callable[..., list[str]]
) -> None:
    visit_adder(local_archive_dir, visit="j8old1", proposal_id=9000, release_mjd=52000.0, suffix="FLT")
    with FakeMast(local_archive_dir) as mast:
        found = MastArchive(server=mast.url, policy=FAST).proposal_observations(9000)
    assert [obs.product_filename for obs in found] == ["j8old1a0q_flt.fits", "j8old1b1q_flt.fits"]


def test_queries_survive_503s_and_stalls(local_archive_dir: Path, tmp_path: Path) -> None:
    plan = FaultPlan(
        fraction=0.5, kinds=("503", "timeout", "truncate"), stall_s=2.0, seed=9, endpoints=("/api/v0/invoke",)
    )
    with FakeMast(local_archive_dir, faults=plan) as mast:
        archive = MastArchive(server=mast.url, policy=FAST)
        result = poll_released(archive, JsonWatermarkStore(tmp_path / "w.json"), until_mjd=60100.0)
        assert len(result.visits) == 3
        assert set(mast.counters.faults) == {"503", "timeout", "truncate"}  # seeded: all three kinds occur
        assert archive.stats.retries == sum(mast.counters.faults.values())


def test_token_is_sent_for_exclusive_access_and_never_logged(
    local_archive_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-3f9a1c77e2"
    caplog.set_level(logging.DEBUG)
    with FakeMast(local_archive_dir, token=secret) as mast:
        anonymous = MastArchive(server=mast.url, policy=FAST)
        observations = anonymous.proposal_observations(10368)
        refused = fetch_observations(anonymous, observations, data_root=tmp_path / "anon", policy=FAST)
        assert refused.count("failed") == 2
        assert all("HTTP 401" in (r.reason or "") for r in refused.results)

        archive = MastArchive(server=mast.url, token=secret, policy=FAST)
        assert archive.proposal_observations(10368) == observations
        report = fetch_observations(archive, observations, data_root=tmp_path / "auth", policy=FAST)
        assert report.count("downloaded") == 2
        assert mast.counters.authenticated_requests >= 3  # whoami + two downloads
        assert secret not in repr(archive)
    assert secret not in caplog.text


def test_wrong_token_is_a_clear_error(local_archive_dir: Path) -> None:
    from crlib.errors import ArchiveError

    with FakeMast(local_archive_dir, token="right") as mast:
        archive = MastArchive(server=mast.url, token="wrong-token-value", policy=FAST)
        with pytest.raises(ArchiveError, match="rejected the API token") as info:
            archive.proposal_observations(10368)
    assert "wrong-token-value" not in str(info.value)


def test_field_type_comes_from_caom_metadata_on_real_style_rows(
    local_archive_dir: Path, facts: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Real MAST rows have no simulator column: the target classification and name decide."""
    import json

    from crlib.archive.caom import field_type_label

    path = local_archive_dir / "observations.json"
    manifest = json.loads(path.read_text())
    simulated = {row["crlib_visit"]: row["crlib_field_type"] for row in manifest["observations"]}
    # With the simulator's column the simulator's truth is used, and labelled as such.
    assert {field_type_label(row).method for row in manifest["observations"]} == {"simulator"}
    described = {
        facts.visits_a[0]: ("STAR CLUSTERS;GLOBULAR CLUSTERS", "NGC6397", "ACS Survey of Globular Clusters"),
        facts.visits_a[1]: ("GALAXY;SPIRAL", "M31-DISK", "Panchromatic Hubble Andromeda Treasury"),
        facts.visits_b[0]: ("GALAXY", "PGC2807133", "A galaxy of unknown distance"),
    }
    for row in manifest["observations"]:
        del row["crlib_field_type"]
        classification, name, title = described[row["crlib_visit"]]
        row.update(target_classification=classification, target_name=name, obs_title=title)
    path.write_text(json.dumps(manifest))

    caplog.set_level(logging.INFO, logger="crlib.archive.caom")
    with FakeMast(local_archive_dir) as mast:
        found = MastArchive(server=mast.url, policy=FAST).released_between(0.0, 70000.0)
    types = {obs.visit: {o.field_type for o in found if o.visit == obs.visit} for obs in found}
    assert types == {
        facts.visits_a[0]: {"globular_cluster"},
        facts.visits_a[1]: {"resolved_galaxy"},
        facts.visits_b[0]: {None},  # unknown: never a guess, and the poll says so
    }
    assert simulated[facts.visits_a[0]] == "globular_cluster"
    assert "metadata:globular_cluster" in caplog.text and "unknown:unknown" in caplog.text
    assert "2 exposure(s) have no field type from metadata" in caplog.text
