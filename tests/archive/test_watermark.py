"""The JSON watermark store: monotonic, durable, clear about corruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlib.archive import JsonWatermarkStore, LocalArchive, WatermarkStore, poll_and_record
from crlib.errors import InputDataError


def test_watermark_only_moves_forward_and_persists(tmp_path: Path) -> None:
    store = JsonWatermarkStore.under(tmp_path)
    assert isinstance(store, WatermarkStore)
    assert store.get("mast:x") is None
    assert store.advance("mast:x", 60010.0) == 60010.0
    assert store.advance("mast:x", 60005.0) == 60010.0
    store.advance("local:/a", 1.0)
    reopened = JsonWatermarkStore.under(tmp_path)
    assert reopened.get("mast:x") == 60010.0 and reopened.get("local:/a") == 1.0
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["watermarks.json"]  # no temp files left


def test_corrupt_watermark_file_names_the_file(tmp_path: Path) -> None:
    store = JsonWatermarkStore(tmp_path / "w.json")
    (tmp_path / "w.json").write_text("{not json")
    with pytest.raises(InputDataError, match=r"w\.json.*unreadable watermark"):
        store.get("mast:x")


def test_watermark_is_not_advanced_when_recording_fails(local_archive_dir: Path, tmp_path: Path) -> None:
    store = JsonWatermarkStore.under(tmp_path)
    archive = LocalArchive(local_archive_dir)

    def broken_recorder(result: object) -> None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        poll_and_record(archive, store, broken_recorder, until_mjd=60100.0)
    assert store.get(archive.source) is None
    recorded = []
    result = poll_and_record(archive, store, recorded.append, until_mjd=60100.0)
    assert recorded == [result] and len(result.visits) == 3
    assert store.get(archive.source) == 60100.0
