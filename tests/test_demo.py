"""The main job a newcomer runs: it must work twice in a row on the same data root."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_demo_processes_new_visits_on_every_run(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from crlib.config import load_settings
    from crlib.demo import run_demo

    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_THREADS", "2")
    settings = load_settings()
    for _ in range(2):
        summary = run_demo(settings, seed=7, airflow=False)
        assert re.search(r"^Visits 3, exposures 9, accepted 9$", summary, flags=re.M), summary
        assert summary.count("(3 exposures)") == 3, summary  # TPR lines for all three field types
    assert len(list((settings.data_root / "demo").glob("archive-*"))) == 1
