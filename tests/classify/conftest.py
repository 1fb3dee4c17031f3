"""Fixtures for the field-type classifiers: one small simulated archive of every field type."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mixed_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small simulated archive: 6 visits (2 of each field type) x 2 exposures, three filters."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("classify-archive")
    simulate_archive(
        root,
        visits=6,
        exposures=2,
        field_type="mixed",
        filters=("F435W", "F606W", "F814W"),
        size="small",
        seed=31,
    )
    return root
