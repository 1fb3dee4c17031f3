"""Surface-brightness fluctuations: the grainy texture of a resolved galaxy's unresolved stars.

A crowded resolved galaxy (:func:`crlib.simulate.scene.crowd_resolved_galaxy`) draws its stars
brighter than :data:`~crlib.simulate.scene.CROWD_FAINTEST_MAG` one by one; the rest of the disk's
stellar light is the smooth disk. On the sky that light is made of a few faint stars per pixel,
and their number varies from pixel to pixel as a Poisson count. So the light fluctuates about its
mean: per pixel, before the PSF, with variance ``L * e_bar``, where ``L`` is the mean light and
``e_bar = sum(f**2) / sum(f)`` the flux-weighted mean flux of the stars (Tonry & Schneider 1988,
AJ 96, 807). The PSF turns that white pattern into PSF-sized grains; their variance per pixel is
``L * e_bar * sum(psf**2)`` (``sum(psf**2)`` is about 0.10 for the real F606W PSF). The pattern
is fixed on the sky, so it is the same in every exposure of a visit and AstroDrizzle's median
keeps it; a single exposure shows it as a field of faint, star-like grains under the noise.

``e_bar`` of the unresolved stars (:func:`unresolved_mean_star_rate`): the crowd's luminosity
function ``dN/dm ∝ 10^(0.3 m)`` continued for :data:`UNRESOLVED_DEPTH_MAG` below the resolved limit
gives ``e_bar = 0.29 f(28)``, i.e. a fluctuation magnitude of 29.34. It is capped by the whole old
population's fluctuation magnitude, ``M_V = +0.5`` (Tonry et al. 2001, ApJ 546, 681: ``M_I = -1.74``
at ``V - I = 1.15``; fluctuation colour ``V - I ≈ 2.2``, Blakeslee, Vazdekis & Ajhar 2001, MNRAS
320, 193): leaving the brightest stars out can only make the fluctuations fainter. So at distance
modulus 27.6 the unresolved stars fluctuate with m = 29.34 (their own luminosity function), at 29.6
with m = 30.1 (the cap). In the accuracy benchmark's full-size visit (distance modulus 27.55, 550 s
in F606W) the grains are 22 e- rms on a disk of 190 e- per pixel, against a shot noise of 16 e-.

Representation: the unit texture ``T = w * psf`` (``w`` white noise of unit variance on the visit
frame's pixel grid, convolved with the PSF) is stored as cubic-spline coefficients over the scene
box, and a pixel at visit-frame position ``(u, v)`` gets ``sqrt(L(u, v) * e_bar) * T(u, v)``: one
continuous function of sky position, sampled at each exposure's own pixel positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from crlib.simulate.geometry import FloatArray
from crlib.simulate.programs import FilterSpec
from crlib.simulate.scene import CROWD_FAINTEST_MAG, CROWD_LF_SLOPE, Scene

#: Depth (mag) of the unresolved luminosity function below the resolved limit.
UNRESOLVED_DEPTH_MAG = 5.0
#: Fluctuation magnitude (V) of a whole old stellar population (the cap on the unresolved part's).
POPULATION_FLUCTUATION_ABS_MAG = 0.5
#: Half-width (px) of the PSF kernel the white pattern is convolved with.
KERNEL_HALF_WIDTH = 12


def unresolved_mean_star_rate(
    *, distance_modulus: float, faintest_resolved_mag: float, lf_slope: float, zeropoint: float
) -> float:
    """Flux-weighted mean count rate ``e_bar`` (e- s⁻¹) of the stars fainter than the resolved limit.

    Parameters
    ----------
    distance_modulus
        The galaxy's distance modulus, mag.
    faintest_resolved_mag
        Apparent magnitude of the faintest star drawn one by one.
    lf_slope
        Luminosity-function slope ``s`` of ``dN/dm ∝ 10^(s m)`` (< 0.4).
    zeropoint
        Filter AB zero point (magnitude of 1 e- s⁻¹).

    Returns
    -------
    float
        ``e_bar`` in e- s⁻¹ of the stars in ``[limit, limit + UNRESOLVED_DEPTH_MAG]``, at most
        the whole population's (apparent :data:`POPULATION_FLUCTUATION_ABS_MAG`).
    """
    depth = UNRESOLVED_DEPTH_MAG
    # sum f^2 / sum f over m in [lim, lim + depth], f = f_lim 10^(-0.4 (m - lim)), dN/dm ∝ 10^(s m)
    squares = (1.0 - 10.0 ** ((lf_slope - 0.8) * depth)) / (0.8 - lf_slope)
    fluxes = (1.0 - 10.0 ** ((lf_slope - 0.4) * depth)) / (0.4 - lf_slope)
    limit_rate = 10.0 ** (-0.4 * (faintest_resolved_mag - zeropoint))
    own = limit_rate * squares / fluxes
    cap = 10.0 ** (-0.4 * (POPULATION_FLUCTUATION_ABS_MAG + distance_modulus - zeropoint))
    return float(min(own, cap))


@dataclass(frozen=True)
class FluctuationTexture:
    """The unit texture ``T`` over the scene box and the stars' ``e_bar``.

    Attributes
    ----------
    u_min, v_min
        Visit-frame position of coefficient ``[0, 0]``, pixels (the grid step is one pixel).
    coefficients
        Cubic-spline coefficients of ``T``, float32, shape (n_v, n_u).
    mean_star_rate
        ``e_bar``, e- s⁻¹.
    unit_rms
        Standard deviation of ``T`` over the grid (``sqrt(sum(psf**2))``).
    """

    u_min: float
    v_min: float
    coefficients: np.ndarray
    mean_star_rate: float
    unit_rms: float

    def unit(self, u: FloatArray, v: FloatArray) -> FloatArray:
        """``T`` at visit-frame positions (mirrored outside the box, which no exposure reaches)."""
        from scipy.ndimage import map_coordinates

        u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
        shape = np.broadcast_shapes(u.shape, v.shape)
        rows = np.broadcast_to(v - self.v_min, shape).ravel()
        cols = np.broadcast_to(u - self.u_min, shape).ravel()
        values = map_coordinates(self.coefficients, [rows, cols], order=3, prefilter=False, mode="mirror")
        return values.reshape(shape)

    def apply(self, stellar_rate: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
        """Unresolved stellar light ``stellar_rate`` (e- s⁻¹ px⁻¹) with its grains, never negative."""
        grains = np.sqrt(np.clip(stellar_rate, 0.0, None) * self.mean_star_rate) * self.unit(u, v)
        return np.clip(stellar_rate + grains, 0.0, None)


def draw_texture(
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    *,
    psf: Callable[[FloatArray, FloatArray], FloatArray],
    mean_star_rate: float,
) -> FluctuationTexture:
    """Draw the white pattern over ``box`` and convolve it with the PSF.

    Parameters
    ----------
    rng
        The texture's own random stream.
    box
        ``(u_min, u_max, v_min, v_max)`` of the visit frame, pixels.
    psf
        PSF (fraction of the flux per pixel) at offsets ``(dx, dy)`` from a star's centre, px.
    mean_star_rate
        ``e_bar`` of :func:`unresolved_mean_star_rate`, e- s⁻¹.

    Returns
    -------
    FluctuationTexture
    """
    from scipy.ndimage import spline_filter
    from scipy.signal import oaconvolve

    u_min, u_max, v_min, v_max = box
    pad = KERNEL_HALF_WIDTH + 4  # the spline's edge rows lie outside every exposure
    n_u = int(np.ceil(u_max - u_min)) + 2 * pad
    n_v = int(np.ceil(v_max - v_min)) + 2 * pad
    offsets = np.arange(-KERNEL_HALF_WIDTH, KERNEL_HALF_WIDTH + 1, dtype=float)
    kernel = psf(offsets[None, :] + 0.0 * offsets[:, None], offsets[:, None] + 0.0 * offsets[None, :])
    kernel = kernel / kernel.sum()
    white = rng.standard_normal((n_v, n_u), dtype=np.float32)
    texture = oaconvolve(white, kernel.astype(np.float32), mode="same")
    del white
    coefficients = spline_filter(texture, order=3, output=np.float32, mode="mirror")
    return FluctuationTexture(
        u_min=float(u_min - pad),
        v_min=float(v_min - pad),
        coefficients=coefficients,
        mean_star_rate=float(mean_star_rate),
        unit_rms=float(np.sqrt((kernel**2).sum())),
    )


def with_fluctuations(
    scene: Scene,
    box: tuple[float, float, float, float],
    *,
    filter_spec: FilterSpec,
    real_psf: bool,
    rng: np.random.Generator,
) -> Scene:
    """``scene`` with its crowded disk's unresolved starlight made grainy.

    Parameters
    ----------
    scene
        A crowded resolved galaxy (its summary holds ``crowd_distance_modulus`` and
        ``crowd_field_rate``).
    box
        The scene box, ``(u_min, u_max, v_min, v_max)``, visit-frame pixels.
    filter_spec
        The visit's filter: zero point and Moffat FWHM. A multi-filter visit's other filters see
        the same grains, scaled with the rest of the scene by their zero points.
    real_psf
        Grains shaped by drizzlepac's PSF of the filter (as the stars are) instead of the Moffat core.
    rng
        The texture's own stream.

    Returns
    -------
    Scene
        With :attr:`~crlib.simulate.scene.Scene.fluctuations` set and two numbers added to its
        summary: ``fluctuation_mag`` (apparent fluctuation magnitude of the unresolved stars) and
        ``fluctuation_rms_at_field_e_per_s`` (grain rms at the field centre's light, e- s⁻¹ px⁻¹).
    """
    zeropoint = filter_spec.ab_zeropoint
    mean_star_rate = unresolved_mean_star_rate(
        distance_modulus=scene.summary["crowd_distance_modulus"],
        faintest_resolved_mag=CROWD_FAINTEST_MAG,
        lf_slope=CROWD_LF_SLOPE,
        zeropoint=zeropoint,
    )
    if real_psf:
        from crlib.simulate.psf import psf_values

        def psf(dx: FloatArray, dy: FloatArray) -> FloatArray:
            return psf_values(filter_spec.name, dx, dy)
    else:
        from crlib.simulate.render import moffat_alpha, moffat_shape

        alpha = moffat_alpha(filter_spec.psf_fwhm_px)

        def psf(dx: FloatArray, dy: FloatArray) -> FloatArray:
            return moffat_shape(dx, dy, alpha)  # draw_texture normalises the kernel

    texture = draw_texture(rng, box, psf=psf, mean_star_rate=mean_star_rate)
    summary = {
        **scene.summary,
        "fluctuation_mag": float(zeropoint - 2.5 * np.log10(mean_star_rate)),
        "fluctuation_rms_at_field_e_per_s": float(
            np.sqrt(scene.summary["crowd_field_rate"] * mean_star_rate) * texture.unit_rms
        ),
    }
    return replace(scene, fluctuations=texture, summary=summary)
