"""Crowded, structured resolved galaxies (``SimEffects.crowded_resolved_galaxies``, crlib.simulate.scene)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from crlib.simulate import scene as sc
from crlib.simulate.effects import SimEffects
from crlib.simulate.scene import DiffuseLight, build_scene, crowd_resolved_galaxy

BOX = (-1200.0, 1200.0, -1000.0, 1000.0)


def _frame() -> WCS:
    frame = WCS(naxis=2)
    frame.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    frame.wcs.crval = [10.95, 41.5]
    frame.wcs.crpix = [1.0, 1.0]
    frame.wcs.cd = np.array([[-0.05, 0.0], [0.0, 0.05]]) / 3600.0
    return frame


def _scene(field_type: str, crowded: bool, seed: int = 4):
    return build_scene(
        np.random.default_rng([seed, 0]),
        field_type=field_type,
        frame=_frame(),
        box=BOX,
        zeropoint=26.5,
        crowded_rng=np.random.default_rng([seed, 1]) if crowded else None,
    )


def test_switch_is_in_the_realistic_preset_only() -> None:
    assert SimEffects.realistic().crowded_resolved_galaxies
    assert not SimEffects.basic().crowded_resolved_galaxies
    assert SimEffects(crowded_resolved_galaxies=True).any


@pytest.mark.parametrize("field_type", ["globular_cluster", "extragalactic"])
def test_other_field_types_ignore_the_switch(field_type: str) -> None:
    off, on = _scene(field_type, False), _scene(field_type, True)
    assert on.structure is None and off.structure is None
    for name in ("star_ra", "star_dec", "star_rate", "galaxy_ra", "galaxy_rate", "galaxy_re"):
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name))


def test_crowding_adds_to_the_smooth_scene_without_moving_its_draws() -> None:
    off, on = _scene("resolved_galaxy", False), _scene("resolved_galaxy", True)
    assert off.structure is None and on.structure is not None
    assert on.diffuse == off.diffuse
    for name in ("galaxy_ra", "galaxy_dec", "galaxy_rate", "galaxy_re", "galaxy_n"):
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name))
    n_old = off.star_ra.size
    np.testing.assert_array_equal(on.star_ra[:n_old], off.star_ra)  # the same stars first ...
    dimmed = on.star_rate[:n_old] / off.star_rate
    # ... dimmed where they lie behind dust
    assert np.all(dimmed <= 1.0 + 1e-12) and dimmed.min() > np.exp(-max(sc.CROWD_DUST_TAU)) - 1e-9
    assert on.star_ra.size > 2 * n_old
    # the smooth scene's light is unchanged where the switch is off
    u, v = np.meshgrid(np.arange(-50.0, 50.0, 7.0), np.arange(-30.0, 30.0, 5.0))
    np.testing.assert_array_equal(off.diffuse_rate(u, v), off.diffuse.rate(u, v))


def test_crowded_stars_arms_dust_and_knots_are_within_their_stated_ranges() -> None:
    disk = DiffuseLight(u0=0.0, v0=0.0, r_e=1200.0, n=1.0, axis_ratio=0.7, pa_rad=0.4, central_rate=0.8)
    structure, stars, summary = crowd_resolved_galaxy(np.random.default_rng(7), disk, BOX)
    assert sc.CROWD_PITCH_DEG[0] <= summary["crowd_pitch_deg"] <= sc.CROWD_PITCH_DEG[1]
    low, high = sc.CROWD_OLD_DENSITY
    assert low <= summary["crowd_old_density"] <= high
    # magnitudes: the stated ranges, a luminosity function of slope ~0.3 (dN/dm ∝ 10^0.3m)
    mag = stars["mag"]
    assert mag.min() >= min(sc.CROWD_YOUNG_MAGS[0], sc.CROWD_OLD_MAGS[0]) and mag.max() <= 28.0
    counts, _ = np.histogram(mag, bins=np.arange(21.0, 28.01, 1.0))
    slope = np.polyfit(np.arange(21.5, 28.0, 1.0), np.log10(counts), 1)[0]
    assert slope == pytest.approx(sc.CROWD_LF_SLOPE, abs=0.03)
    # density: old stars per px² near the disk centre (where the disk's share is ~1) follow the
    # drawn central density times the arm/patch factor (mean ~1)
    near = np.hypot(stars["u"], stars["v"]) < 150.0
    measured = near.sum() / (np.pi * 150.0**2)
    expected = summary["crowd_old_density"] + summary["crowd_arm_young_density"] * 0.25
    assert 0.6 * expected < measured < 1.6 * expected + 0.01
    assert low * 0.6 < measured < high * 1.6
    # stars brighter than m = 24 (peak > ~1000 e- in 500 s at F606W): 1 per 100-2000 px² there
    bright = (near & (mag < 24.0)).sum() / (np.pi * 150.0**2)
    assert 5e-4 < bright < 1e-2
    # arms: crest / interarm contrast as drawn (patchiness divided out), dust on the arms
    ratio = structure.arms.max() / structure.arms.min()
    assert ratio > sc.CROWD_ARM_CONTRAST[0]
    assert structure.tau.max() <= sc.CROWD_DUST_TAU[1] and structure.tau.min() >= 0.0
    assert structure.arm_crest.min() >= 0.0 and structure.arm_crest.max() <= 1.0
    assert structure.nebular.min() >= 0.0
    # structured light: the grid's bilinear sample and apply agree at grid nodes
    gu = structure.u_min + structure.step * np.array([10, 200, 300])
    gv = structure.v_min + structure.step * np.array([20, 100, 400])
    rate = disk.rate(gu, gv)
    expected_rate = (
        rate
        * structure.arms[[20, 100, 400], [10, 200, 300]]
        * np.exp(-structure.tau[[20, 100, 400], [10, 200, 300]])
        + structure.nebular[[20, 100, 400], [10, 200, 300]]
    )
    np.testing.assert_allclose(structure.apply(rate, gu, gv), expected_rate, rtol=1e-12)


def test_crowded_scene_is_reproducible() -> None:
    first, second = _scene("resolved_galaxy", True, seed=9), _scene("resolved_galaxy", True, seed=9)
    np.testing.assert_array_equal(first.star_rate, second.star_rate)
    np.testing.assert_array_equal(first.structure.nebular, second.structure.nebular)
