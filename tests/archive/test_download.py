"""Downloads through the fake MAST with injected faults, resume, verification and path safety."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from crlib.archive import LocalArchive, MastArchive, RetryPolicy, fetch_observations, poll_proposal
from crlib.archive.download import DownloadProgress, safe_destination
from crlib.harness.fake_mast import FakeMast, FaultPlan

FAST = RetryPolicy(
    max_attempts=12,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    read_timeout_s=1.0,
    connect_timeout_s=1.0,
    seed=7,
)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _sources(archive_dir: Path) -> dict[str, str]:
    manifest = json.loads((archive_dir / "observations.json").read_text())
    return {
        p["productFilename"]: _md5(archive_dir / p["crlib_path"])
        for p in manifest["products"]
        if p["productSubGroupDescription"] == "FLC"
    }


def test_faulty_mast_delivers_every_file_byte_identical_once(local_archive_dir: Path, tmp_path: Path) -> None:
    plan = FaultPlan(fraction=0.3, kinds=("503", "timeout", "truncate", "wrong_length"), stall_s=1.5, seed=11)
    events: list[DownloadProgress] = []
    with FakeMast(local_archive_dir, faults=plan) as mast:
        archive = MastArchive(server=mast.url, policy=FAST)
        observations = list(archive.released_between(0.0, 70000.0))
        report = fetch_observations(
            archive,
            observations + observations[:2],
            data_root=tmp_path / "data",
            concurrency=3,
            policy=FAST,
            progress=events.append,
        )
        faults = sum(mast.counters.faults.values())
    assert report.count("downloaded") == 6 and report.count("failed") == 0
    assert faults > 0 and report.retries > 0
    assert report.retries + archive.stats.retries == faults  # every injected fault cost exactly one retry
    on_disk = sorted(p for p in (tmp_path / "data" / "archive").rglob("*") if p.is_file())
    assert [p.name for p in on_disk] == sorted(_sources(local_archive_dir))  # no duplicates, no .part left
    for path in on_disk:
        assert _md5(path) == _sources(local_archive_dir)[path.name]
        assert path.parent.name == path.name[:6]
    assert {e.event for e in events} >= {"start", "progress", "done", "retry"}


def test_second_fetch_reuses_verified_files(local_archive_dir: Path, tmp_path: Path) -> None:
    with FakeMast(local_archive_dir) as mast:
        archive = MastArchive(server=mast.url, policy=FAST)
        observations = poll_proposal(archive, 12546).observations
        first = fetch_observations(archive, observations, data_root=tmp_path / "data", policy=FAST)
        second = fetch_observations(archive, observations, data_root=tmp_path / "data", policy=FAST)
        completed = sum(mast.counters.downloads_completed.values())
    assert first.count("downloaded") == 4
    assert second.count("cached") == 4 and second.retries == 0
    assert completed == 4
    assert [r.checksum for r in first.results] == [r.checksum for r in second.results]


def test_partial_file_is_resumed_with_a_range_request(local_archive_dir: Path, tmp_path: Path) -> None:
    with FakeMast(local_archive_dir) as mast:
        archive = MastArchive(server=mast.url, policy=FAST)
        obs = archive.proposal_observations(10368)[0]
        source = local_archive_dir / obs.visit / obs.product_filename
        dest = safe_destination(tmp_path / "data", obs.visit, obs.product_filename)
        dest.parent.mkdir(parents=True)
        dest.with_name(dest.name + ".part").write_bytes(source.read_bytes()[:100_000])
        report = fetch_observations(archive, [obs], data_root=tmp_path / "data", policy=FAST)
        assert mast.counters.range_requests[obs.product_filename] == 1
    assert report.results[0].status == "downloaded" and report.results[0].attempts == 1
    assert dest.read_bytes() == source.read_bytes()


def test_archive_supplied_names_cannot_escape_the_data_root(local_archive_dir: Path, tmp_path: Path) -> None:
    archive = LocalArchive(local_archive_dir)
    good = archive.proposal_observations(10368)[0]
    evil = [
        replace(good, product_filename="../../../etc/evil.fits"),
        replace(good, visit="../x"),
        replace(good, product_filename="/abs/path.fits"),
    ]
    before = sorted(tmp_path.rglob("*"))
    report = fetch_observations(archive, evil, data_root=tmp_path / "root" / "data", policy=FAST)
    assert [r.status for r in report.results] == ["failed"] * 3
    assert all("unsafe" in (r.reason or "") for r in report.results)
    assert sorted(tmp_path.rglob("*")) == before


def test_local_archive_checksum_mismatch_is_reported(local_archive_dir: Path, tmp_path: Path) -> None:
    archive = LocalArchive(local_archive_dir)
    obs = archive.proposal_observations(10368)[0]
    product = local_archive_dir / obs.visit / obs.product_filename
    data = bytearray(product.read_bytes())
    data[5000] ^= 0xFF  # same size, different content
    product.unlink()  # the fixture hard-links files: replace, never modify in place
    product.write_bytes(bytes(data))
    report = fetch_observations(
        archive, [obs], data_root=tmp_path / "data", policy=replace(FAST, max_attempts=2)
    )
    result = report.results[0]
    assert result.status == "failed" and result.attempts == 2
    assert "checksum" in (result.reason or "")
    assert not list((tmp_path / "data" / "archive").rglob("*.fits"))


def test_local_archive_copies_verified_files(local_archive_dir: Path, tmp_path: Path) -> None:
    archive = LocalArchive(local_archive_dir)
    report = fetch_observations(
        archive, archive.released_between(0, 70000), data_root=tmp_path / "data", policy=FAST
    )
    assert report.count("downloaded") == 6
    for result in report.results:
        assert result.checksum == f"md5:{_md5(Path(result.path))}"
