"""Simulated subarray visits look like the archive's one-chip subarray files and go through the stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.errors import ConfigError
from crlib.formats.flc import read_exposure
from crlib.screening import screen_file
from crlib.simulate import simulate_visit
from crlib.simulate.effects import SimEffects
from crlib.simulate.subarray import ACS_WFC_APERTURES, SMALL_APERTURE, draw_aperture


@pytest.fixture(scope="module")
def subarray_visit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subarray")
    visit = simulate_visit(
        root,
        field_type="extragalactic",
        exposures=2,
        size="small",
        seed=3,
        effects=SimEffects.realistic(subarray_aperture="WFC1A-512"),
    )
    return visit.directory


def test_a_subarray_file_holds_one_wfc1_chip_numbered_one(subarray_visit: Path) -> None:
    flcs = sorted(subarray_visit.glob("*_flc.fits"))
    assert len(flcs) == 2
    for flc in flcs:
        with fits.open(flc) as hdul:
            chips = [(h.name, h.ver) for h in hdul if h.name in ("SCI", "ERR", "DQ")]
            assert chips == [("SCI", 1), ("ERR", 1), ("DQ", 1)]
            primary, sci = hdul[0].header, hdul["SCI", 1].header
            assert primary["SUBARRAY"] is True and primary["APERTURE"] == "WFC1A-512"
            assert primary["NEXTEND"] == len(hdul) - 1
            assert sci["CCDCHIP"] == 1 and hdul["SCI", 1].data.shape == (512, 512)
            assert (sci["LTV1"], sci["LTV2"]) == (0.0, -1535.0)
        truth = subarray_visit / "truth" / flc.name.replace("_flc.fits", "_simtruth.fits")
        with fits.open(truth) as hdul:
            assert sorted({h.ver for h in hdul if h.name == "CRMASK"}) == [1]
            assert np.asarray(hdul["CRMASK", 1].data).any()


def test_screening_and_the_reader_take_the_layout_from_the_file(subarray_visit: Path) -> None:
    flc = sorted(subarray_visit.glob("*_flc.fits"))[0]
    verdict = screen_file(flc)
    assert verdict.verdict == "accept", verdict.reasons
    exposure = read_exposure(flc)
    assert exposure.layout is not None and exposure.layout.subarray
    assert exposure.layout.aperture == "WFC1A-512" and list(exposure.chips) == [1]
    assert exposure.ccd(1).ccdchip == 1


def test_apertures_are_drawn_from_their_own_stream() -> None:
    draws = [
        draw_aperture(probability=0.05, forced=None, size="full", seed=seed, visit_index=index)
        for seed in range(20)
        for index in range(10)
    ]
    chosen = [d for d in draws if d is not None]
    assert 0 < len(chosen) < 30 and set(chosen) <= set(ACS_WFC_APERTURES)
    assert draw_aperture(probability=0.0, forced=None, size="full", seed=2, visit_index=0) is None
    assert draw_aperture(probability=1.0, forced=None, size="small", seed=2, visit_index=0) == SMALL_APERTURE
    assert draw_aperture(probability=0.0, forced="WFC1A-1K", size="full", seed=2, visit_index=0) == "WFC1A-1K"
    with pytest.raises(ConfigError, match="unknown subarray aperture"):
        SimEffects(subarray_aperture="WFC9-XL")
