"""MastArchive (real astroquery client) against the fake MAST on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crlib.archive import JsonWatermarkStore, MastArchive, RetryPolicy, fetch_observations, poll_proposal
from crlib.archive.fake_mast import FakeMast, FaultPlan
from crlib.archive.poll import commit_poll, poll_released

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
