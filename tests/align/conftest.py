"""A small simulated visit on real Gaia positions, shared by the alignment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

GAIA_FILE = "gaia/gaia_dr2_ngc6791_wfc3_ibwb01.cat"


@pytest.fixture(scope="session")
def gaia_visit(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """A small 3-exposure visit whose stars sit at real Gaia DR2 positions (NGC 6791)."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("gaia-archive")
    archive = simulate_archive(
        root,
        visits=1,
        exposures=3,
        field_type="globular_cluster",
        size="small",
        seed=3,
        gaia_catalog=shared_data / GAIA_FILE,
    )
    return archive.visits[0]
