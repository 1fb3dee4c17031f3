"""Archive watermarks in Postgres: shared, durable, never moving backwards."""

from __future__ import annotations

from typing import Any

import pytest

from crlib.db.watermarks import DatabaseWatermarkStore
from crlib.errors import DatabaseError


def test_watermark_advances_and_never_moves_back(sessions: Any) -> None:
    store = DatabaseWatermarkStore(sessions)
    assert store.get("mast:ACS/WFC") is None
    assert store.advance("mast:ACS/WFC", 60000.5) == 60000.5
    assert store.advance("mast:ACS/WFC", 59000.0) == 60000.5
    assert store.get("mast:ACS/WFC") == 60000.5
    assert store.advance("mast:ACS/WFC", 60001.25) == 60001.25
    assert store.get("local:/data/archive") is None
    # A second store on the same database sees the same value (what another worker would see).
    assert DatabaseWatermarkStore(sessions).get("mast:ACS/WFC") == 60001.25


def test_watermark_satisfies_the_archive_protocol(sessions: Any) -> None:
    from crlib.archive.watermark import WatermarkStore

    store: WatermarkStore = DatabaseWatermarkStore(sessions)
    assert store.advance("mast", 1.0) == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "60000"])
def test_watermark_rejects_non_finite_values(sessions: Any, bad: Any) -> None:
    store = DatabaseWatermarkStore(sessions)
    with pytest.raises(DatabaseError, match=r"archive_watermarks\.mjd"):
        store.advance("mast", bad)
    assert store.get("mast") is None
