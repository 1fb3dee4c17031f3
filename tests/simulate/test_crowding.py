"""Crowded, structured resolved galaxies (``SimEffects.crowded_resolved_galaxies``, crlib.simulate.scene)."""

from __future__ import annotations

import numpy as np
import pytest
from testsupport.frames import tan_frame

from crlib.simulate import scene as sc
from crlib.simulate.effects import SimEffects
from crlib.simulate.scene import DiffuseLight, build_scene, crowd_resolved_galaxy

BOX = (-1200.0, 1200.0, -1000.0, 1000.0)


def _scene(field_type: str, crowded: bool, seed: int = 4):
    return build_scene(
        np.random.default_rng([seed, 0]),
        field_type=field_type,
        frame=tan_frame(),
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
    # the field lies inside an exponential disk of the same orientation
    assert on.diffuse.n == 1.0 and on.diffuse.axis_ratio == off.diffuse.axis_ratio
    assert on.diffuse.pa_rad == off.diffuse.pa_rad
    for name in ("galaxy_ra", "galaxy_dec", "galaxy_rate", "galaxy_re", "galaxy_n"):
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name))
    n_old = off.star_ra.size
    np.testing.assert_array_equal(on.star_ra[:n_old], off.star_ra)  # the same stars first ...
    dimmed = on.star_rate[:n_old] / off.star_rate
    # ... dimmed where they lie behind dust
    assert np.all(dimmed <= 1.0 + 1e-12) and dimmed.min() > np.exp(-max(sc.CROWD_DUST_TAU)) - 1e-9
    assert on.star_ra.size > n_old
    # the smooth scene's light is unchanged where the switch is off
    u, v = np.meshgrid(np.arange(-50.0, 50.0, 7.0), np.arange(-30.0, 30.0, 5.0))
    np.testing.assert_array_equal(off.diffuse_rate(u, v), off.diffuse.rate(u, v))


@pytest.mark.parametrize("seed", [3, 4])
def test_crowded_stars_arms_dust_and_knots_are_within_their_stated_ranges(seed: int) -> None:
    smooth = DiffuseLight(u0=0.0, v0=0.0, r_e=1200.0, n=2.0, axis_ratio=0.7, pa_rad=0.4, central_rate=0.8)
    disk, structure, stars, summary = crowd_resolved_galaxy(np.random.default_rng(seed), smooth, BOX, 26.5)
    assert sc.CROWD_PITCH_DEG[0] <= summary["crowd_pitch_deg"] <= sc.CROWD_PITCH_DEG[1]
    dm = summary["crowd_distance_modulus"]
    assert sc.CROWD_DISTANCE_MODULUS[0] <= dm <= sc.CROWD_DISTANCE_MODULUS[1]
    # the disk's surface brightness at the field centre is the drawn one (F606W: 0.1-0.6 e-/s/px)
    mu = summary["crowd_field_mu_v"]
    assert sc.CROWD_FIELD_MU[0] <= mu <= sc.CROWD_FIELD_MU[1]
    rate = float(disk.rate(np.zeros(1), np.zeros(1))[0])
    assert rate == pytest.approx(10 ** (-0.4 * (mu + 6.505 - 26.5)), rel=1e-9)
    assert 0.1 < rate < 0.65 and disk.n == 1.0
    # magnitudes: the distance sets the bright end; luminosity function slope ~0.3 (dN/dm ∝ 10^0.3m)
    mag = stars["mag"]
    assert mag.min() >= max(dm + sc.CROWD_YOUNG_BRIGHT_ABS, sc.CROWD_BRIGHTEST_MAG) and mag.max() <= 28.0
    lowest = np.ceil(max(dm + sc.CROWD_OLD_BRIGHT_ABS, sc.CROWD_BRIGHTEST_MAG))
    edges = np.arange(lowest, 28.01, 0.5)
    counts, _ = np.histogram(mag, bins=edges)
    slope = np.polyfit((edges[:-1] + edges[1:]) / 2, np.log10(counts), 1)[0]
    assert slope == pytest.approx(sc.CROWD_LF_SLOPE, abs=0.05)
    # old stars per px² around the field centre: M31's density x 10^(-0.3 (DM - 24.47)) x the disk
    # light in units of a mu_V = 21.5 disk (arms and patches average out)
    n_old = int(summary["crowd_old_stars"])  # the old stars come first
    near = np.hypot(stars["u"][:n_old], stars["v"][:n_old]) < 400.0
    measured = near.sum() / (np.pi * 400.0**2)
    resolved = 10 ** (-0.3 * (dm - 24.47)) * 10 ** (-0.4 * (mu - 21.5))
    expected = summary["crowd_old_density_m31"] * resolved
    assert 0.5 * expected < measured < 2.0 * expected
    # arms: crest / interarm contrast above the drawn minimum, dust within its range
    assert structure.arms.max() / structure.arms.min() > sc.CROWD_ARM_CONTRAST[0]
    assert structure.tau.max() <= sc.CROWD_DUST_TAU[1] and structure.tau.min() >= 0.0
    assert structure.arm_crest.min() >= 0.0 and structure.arm_crest.max() <= 1.0
    assert structure.nebular.min() >= 0.0
    # structured light: the grid's bilinear sample and apply agree at grid nodes
    rows, cols = np.array([20, 100, 400]), np.array([10, 200, 300])
    gu = structure.u_min + structure.step * cols
    gv = structure.v_min + structure.step * rows
    base = disk.rate(gu, gv)
    expected_rate = base * structure.arms[rows, cols] * np.exp(-structure.tau[rows, cols])
    expected_rate += structure.nebular[rows, cols]
    np.testing.assert_allclose(structure.apply(base, gu, gv), expected_rate, rtol=1e-12)


def test_crowded_scene_is_reproducible() -> None:
    first, second = _scene("resolved_galaxy", True, seed=9), _scene("resolved_galaxy", True, seed=9)
    np.testing.assert_array_equal(first.star_rate, second.star_rate)
    np.testing.assert_array_equal(first.structure.nebular, second.structure.nebular)
