"""Archive effects of the simulator (crlib.simulate.effects and the modules behind each switch)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from astropy.io import fits

from crlib.errors import ConfigError
from crlib.profiles import ACS_WFC
from crlib.simulate import simulate_archive
from crlib.simulate.artefacts import (
    BAD_COLUMN,
    CTE_TRAIL,
    DQ_CR_DRIZ,
    HOT_PIXEL,
    SATELLITE,
    SINK,
    UNFLAGGED_HOT,
)
from crlib.simulate.cte import apply_cte, chip_transfers, years_since_install
from crlib.simulate.defects import DQ_SINK_PIXEL, dated_defects, defect_dq
from crlib.simulate.effects import SimEffects, parse_effects
from crlib.simulate.geometry import ChipWindow
from crlib.simulate.pointing import nominal_pointing
from crlib.simulate.psf import peak_fraction, psf_values
from crlib.simulate.render import add_point_sources
from crlib.simulate.satellites import SatelliteTrail, trail_image
from crlib.simulate.template import load_template
from crlib.simulate.visiteffects import exposure_filters


def test_presets() -> None:
    assert not SimEffects().any
    assert SimEffects.basic() == SimEffects()
    realistic = SimEffects.realistic()
    assert realistic.real_psf and realistic.cte and realistic.dated_defects and realistic.prior_drizzle_dq
    assert realistic.rotation_scale_errors and realistic.satellite_probability > 0
    assert realistic.cr_rate_sigma > 0
    assert SimEffects.realistic(cte=False).cte is False
    assert parse_effects("realistic") == realistic
    with pytest.raises(ConfigError):
        parse_effects("mostly")
    with pytest.raises(ConfigError):
        SimEffects(satellite_probability=1.5)
    assert json.dumps(realistic.as_dict())


def test_cte_trail_direction_date_and_sky() -> None:
    charge = np.full((200, 3), 30.0)
    charge[100, 1] += 1000.0
    far = np.full(200, 2000.0)  # a source far from the serial register
    trailed, _ = apply_cte(charge, transfers=far, trail_sign=1, background_e=30.0, years=20.0)
    assert trailed.sum() == pytest.approx(charge.sum(), rel=1e-9)  # charge is moved, not lost
    column = trailed[:, 1] - 30.0
    assert column[100] < 1000.0
    assert column[101] > 1.0 and column[99] == pytest.approx(0.0, abs=1e-9)  # away from the register
    assert np.allclose(trailed[:, 0], 30.0)  # a flat background does not trail
    transfers = chip_transfers(1848, 200, register_at_top=True)  # WFC1 rows 1848-2047
    assert transfers[0] == 200.0 and transfers[-1] == 1.0

    def loss(years: float, sky: float, row: int = 100) -> float:
        image = np.full((200, 1), sky)
        image[row, 0] += 1000.0
        out, _ = apply_cte(image, transfers=transfers, trail_sign=-1, background_e=sky, years=years)
        return float(1000.0 + sky - out[row, 0])

    assert loss(20.0, 30.0) > loss(10.0, 30.0) > loss(2.0, 30.0) > 0
    assert loss(20.0, 30.0) > loss(20.0, 200.0)  # sky fills traps
    assert loss(20.0, 30.0, row=20) > loss(20.0, 30.0, row=180)  # more transfers
    assert years_since_install(52340.0 + 365.25 * 10) == pytest.approx(10.0)


def test_real_psf_flux_and_peak() -> None:
    assert 0.2 < peak_fraction("F606W") < 0.26
    dy, dx = np.mgrid[-60:61, -60:61].astype(float)
    assert psf_values("F814W", dx + 0.3, dy - 0.2).sum() == pytest.approx(1.0, abs=0.02)
    image = np.zeros((200, 200))
    add_point_sources(image, np.array([100.3]), np.array([99.7]), np.array([1e7]), 2.0, psf_filter="F435W")
    assert image.sum() == pytest.approx(1e7, rel=0.02)
    assert np.unravel_index(np.argmax(image), image.shape) == (100, 100)


def test_dated_defects_grow_with_date_and_anneal_cycle() -> None:
    window = ChipWindow(1, 1536, 1536, 1024, 512)
    early = dated_defects(ACS_WFC, window, mjd=53000.0, days_since_anneal=1.0)
    late = dated_defects(ACS_WFC, window, mjd=60000.0, days_since_anneal=25.0)
    assert late.hot_x.size > 2 * early.hot_x.size
    assert late.unflagged.sum() > 5 * max(early.unflagged.sum(), 1)
    assert late.sink_x.size > early.sink_x.size > 0
    assert set(np.unique(late.hot_flag)) == {0, 16, 64}
    dq = defect_dq(window.shape, late)
    assert (dq & DQ_SINK_PIXEL).any() and (dq & 16).any() and (dq & 64).any()
    again = dated_defects(ACS_WFC, window, mjd=60000.0, days_since_anneal=25.0)
    assert np.array_equal(again.hot_x, late.hot_x)  # a property of the detector at that date


def test_satellite_trail_profile() -> None:
    trail = SatelliteTrail(math.radians(30.0), 5.0, (0.0, 0.0), fwhm_px=4.0, peak_e=100.0)
    v, u = np.mgrid[-50:51, -50:51].astype(float)
    image = trail_image(trail, u, v)
    normal = (-math.sin(trail.angle_rad), math.cos(trail.angle_rad))
    distance = u * normal[0] + v * normal[1] - 5.0
    assert image[np.abs(distance) < 0.3].mean() == pytest.approx(100.0, rel=0.02)
    assert image[np.abs(np.abs(distance) - 2.0) < 0.2].mean() == pytest.approx(50.0, rel=0.1)  # FWHM 4


def test_rotation_and_scale_about_the_anchor() -> None:
    template = load_template(ACS_WFC)
    anchor = (2, 2048.0, 0.0)
    base = nominal_pointing(template, anchor, ra_deg=10.0, dec_deg=-30.0, roll_deg=20.0)
    turned = base.rotated_and_scaled(0.01, 1.0 + 1e-4)
    assert np.allclose(turned.anchor_sky(), base.anchor_sky(), atol=1e-12)
    ra, dec = base.chip_wcs(2).all_pix2world([[2048.0, 1000.0]], 0)[0]
    x, y = turned.chip_wcs(2).all_world2pix([[ra, dec]], 0)[0]
    moved = math.hypot(x - 2048.0, y - 1000.0)
    # 1000 px from the anchor: rotation 1.75e-4 rad -> 0.17 px, scale 1e-4 -> 0.1 px
    assert 0.15 < moved < 0.25


def test_exposure_filters_in_blocks() -> None:
    from crlib.simulate.programs import filter_spec

    specs = (filter_spec("F606W"), filter_spec("F814W"))
    assert [f.name for f in exposure_filters(specs, 4, 2)] == ["F606W", "F606W", "F814W", "F814W"]
    assert [f.name for f in exposure_filters(specs, 3, 1)] == ["F606W"] * 3


@pytest.fixture(scope="module")
def realistic_visit(tmp_path_factory):
    effects = SimEffects.realistic(satellite_exposures=(1,), filters_per_visit=2)
    archive = simulate_archive(
        tmp_path_factory.mktemp("realistic"),
        visits=1,
        exposures=4,
        field_type="extragalactic",
        filters=("F606W", "F814W"),
        size="small",
        seed=3,
        effects=effects,
    )
    return archive.visits[0]


def test_realistic_visit_files(realistic_visit) -> None:
    info = json.loads(realistic_visit.truth_json.read_text())
    assert info["effects"]["switches"]["cte"] is True
    assert [e["filter"] for e in info["exposures"]] == ["F606W", "F606W", "F814W", "F814W"]
    assert info["exposures"][1]["effects"]["satellite"] is not None
    factors = {e["effects"]["cr_rate_factor"] for e in info["exposures"]}
    assert len(factors) == 4  # the CR rate changes from exposure to exposure
    seen = 0
    for k, exposure in enumerate(realistic_visit.exposures):
        with fits.open(exposure.path) as flc, fits.open(exposure.truth_path) as truth:
            assert flc[0].header["FILTER1"] == info["exposures"][k]["filter"] or (
                flc[0].header["FILTER2"] == info["exposures"][k]["filter"]
            )
            for extver in (1, 2):
                bits = truth["ARTEFACT", extver].data
                dq = flc["DQ", extver].data
                crmask = truth["CRMASK", extver].data.astype(bool)
                assert truth["CRMASK", extver].data.dtype == np.uint8  # readers of CRMASK unchanged
                assert (bits & HOT_PIXEL).any() and (bits & UNFLAGGED_HOT).any() and (bits & SINK).any()
                assert (bits & CTE_TRAIL).any()
                # new hot pixels carry no flag (unless one lands on an old one)
                assert ((dq[(bits & UNFLAGGED_HOT) > 0] & (16 | 64)) > 0).mean() < 0.05
                assert (dq[(bits & SINK) > 0] & DQ_SINK_PIXEL).all()
                # the archive's own drizzle flagged the CRs it could see
                assert (dq[crmask] & DQ_CR_DRIZ).mean() > 0.5
                seen |= int(((bits & SATELLITE) > 0).any()) << k
                del bits, dq, crmask
    assert seen & 0b10  # the forced trail is in exposure 1
    assert BAD_COLUMN == 32


def test_basic_visit_has_no_artefact_extension(gc_visit) -> None:
    with fits.open(gc_visit.exposures[0].truth_path) as truth:
        assert "ARTEFACT" not in truth
    assert dataclasses.asdict(SimEffects()) == dataclasses.asdict(SimEffects.basic())
