"""Grains of a crowded resolved galaxy's unresolved starlight (crlib.simulate.fluctuations)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from astropy.io import fits
from testsupport.frames import tan_frame

from crlib.simulate import fluctuations as fl
from crlib.simulate.archive import simulate_visit
from crlib.simulate.effects import SimEffects
from crlib.simulate.programs import filter_spec
from crlib.simulate.scene import CROWD_FAINTEST_MAG, CROWD_LF_SLOPE, build_scene

BOX = (-700.0, 700.0, -500.0, 500.0)


def _crowded(seed: int = 4):
    return build_scene(
        np.random.default_rng([seed, 0]),
        field_type="resolved_galaxy",
        frame=tan_frame(),
        box=BOX,
        zeropoint=26.5,
        crowded_rng=np.random.default_rng([seed, 1]),
    )


def _grainy(scene, *, seed: int = 0):
    return fl.with_fluctuations(
        scene, BOX, filter_spec=filter_spec("F606W"), real_psf=True, rng=np.random.default_rng(seed)
    )


def _rate(distance_modulus: float) -> float:
    return fl.unresolved_mean_star_rate(
        distance_modulus=distance_modulus,
        faintest_resolved_mag=CROWD_FAINTEST_MAG,
        lf_slope=CROWD_LF_SLOPE,
        zeropoint=26.5,
    )


def test_switch_is_in_the_realistic_preset_only() -> None:
    assert SimEffects.realistic().surface_brightness_fluctuations
    assert not SimEffects.basic().surface_brightness_fluctuations


def test_unresolved_stars_fluctuate_as_their_luminosity_function_says_capped_by_the_whole_population() -> (
    None
):
    # near: the unresolved stars' own luminosity function, 0.29 of a m = 28 star (m_bar = 29.34)
    assert 26.5 - 2.5 * np.log10(_rate(27.5)) == pytest.approx(29.34, abs=0.01)
    # far: never brighter than the whole old population (M_V = +0.5)
    assert 26.5 - 2.5 * np.log10(_rate(29.6)) == pytest.approx(30.1, abs=1e-9)
    rates = [_rate(dm) for dm in np.linspace(24.0, 31.0, 29)]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(rates))


def test_grains_have_the_stated_amplitude_and_take_no_light_away() -> None:
    smooth = _crowded()
    grainy = _grainy(smooth)
    texture = grainy.fluctuations
    assert texture is not None and smooth.fluctuations is None
    # the grain is the real F606W PSF's: sqrt(sum psf^2) ~ 0.32
    assert 0.25 < texture.unit_rms < 0.4
    u, v = np.meshgrid(np.arange(-300.0, 300.0, 1.0), np.arange(-200.0, 200.0, 1.0))
    light = smooth.diffuse_rate(u, v)
    grains = grainy.diffuse_rate(u, v) - light
    # relative to the local expectation sqrt(stellar light x e_bar) x unit rms (nebular light has none)
    stellar = smooth.structure.stellar(smooth.diffuse.rate(u, v), u, v)
    expected = np.sqrt(stellar * texture.mean_star_rate) * texture.unit_rms
    normalised = grains / expected
    assert normalised.std() == pytest.approx(1.0, abs=0.1)
    assert abs(grains.mean()) < 0.02 * grains.std()  # no light added or removed on average
    assert grainy.summary["fluctuation_mag"] == pytest.approx(26.5 - 2.5 * np.log10(texture.mean_star_rate))
    # the rest of the sky is untouched
    np.testing.assert_array_equal(grainy.star_rate, smooth.star_rate)


def test_grains_are_fixed_on_the_sky() -> None:
    grainy = _grainy(_crowded())
    u, v = np.meshgrid(np.arange(-100.0, 100.0, 1.0), np.arange(-80.0, 80.0, 1.0))
    # two exposures whose pixels are offset by whole pixels see the same grains where they overlap
    first = grainy.diffuse_rate(u, v)
    second = grainy.diffuse_rate(u + 3.0, v - 5.0)
    np.testing.assert_allclose(second[5:, :-3], first[:-5, 3:], rtol=1e-6)
    # at a half-pixel offset the grains are as strong (a continuous field, not per-pixel noise) ...
    half = grainy.diffuse_rate(u + 0.5, v + 0.5)
    smooth = grainy.structure.apply(grainy.diffuse.rate(u, v), u, v)
    smooth_half = grainy.structure.apply(grainy.diffuse.rate(u + 0.5, v + 0.5), u + 0.5, v + 0.5)
    assert (half - smooth_half).std() == pytest.approx((first - smooth).std(), rel=0.1)
    # ... and correlated with their neighbours a half pixel away, as a PSF-sized grain is
    assert np.corrcoef((half - smooth_half).ravel(), (first - smooth).ravel())[0, 1] > 0.5
    # another draw is another pattern
    other = _grainy(_crowded(), seed=1).diffuse_rate(u, v)
    assert np.corrcoef((other - smooth).ravel(), (first - smooth).ravel())[0, 1] < 0.1


def test_a_simulated_resolved_galaxy_visit_carries_the_grains_in_every_exposure(tmp_path) -> None:
    visits = {}
    for name, effects in (
        ("on", SimEffects.realistic(subarray_probability=0.0)),
        ("off", SimEffects.realistic(subarray_probability=0.0, surface_brightness_fluctuations=False)),
    ):
        visits[name] = simulate_visit(
            tmp_path / name, field_type="resolved_galaxy", exposures=2, size="small", seed=0, effects=effects
        )
    meta = {n: json.loads((v.directory / "truth" / "visit.json").read_text()) for n, v in visits.items()}
    assert "fluctuation_mag" not in meta["off"]["scene"]
    rms_at_field = meta["on"]["scene"]["fluctuation_rms_at_field_e_per_s"]
    exptime = meta["on"]["exptime_s"]
    for exposure in ("01", "02"):
        on, off = (
            fits.getdata(
                next((visits[n].directory / "truth").glob(f"*{exposure}q_simtruth.fits")), ("MODEL", 1)
            )
            for n in ("on", "off")
        )
        grains = on.astype(float) - off.astype(float)
        # the noiseless model holds the grains, at the stated strength near the field's light
        assert 0.4 < grains.std() / (rms_at_field * exptime) < 2.5
        assert abs(grains.mean()) < 0.05 * grains.std()
