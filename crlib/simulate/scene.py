"""Sky scenes for the three deepCR field types: stars, galaxies and diffuse light on the sky.

Objects are drawn in a *visit frame*: an undistorted gnomonic frame centred on the visit's anchor
with the nominal detector orientation and ACS/WFC plate scale, so sizes and densities are quoted
in detector pixels (0.05"). Positions are then converted to RA/Dec; rendering goes back through
each exposure's real (distorted) WCS.

Densities (objects per pixel², i.e. per 0.0025 arcsec²) and magnitude ranges per field type:

=================  =============================================  ==============================
field type         stars                                          galaxies / diffuse light
=================  =============================================  ==============================
globular_cluster   King profile, centre density 0.01–0.025,       background galaxies at 0.3x
                   r_c 120–350 px, m 15–27 (dN/dm ∝ 10^0.3m)      the extragalactic density
extragalactic      uniform 5e-5, m 16–27 (∝ 10^0.15m)             2e-4, m 18–28, Sérsic n=1 / 4
resolved_galaxy    follow the diffuse light, centre 0.01–0.03,    Sérsic n=1–2 disk, r_e 800–2000
                   m 21–28 (∝ 10^0.35m), + field stars            px, centre 0.3–1.5 e-/s/px
=================  =============================================  ==============================

With ``crowded=True`` (the simulator switch ``SimEffects.crowded_resolved_galaxies``) a resolved
galaxy is drawn as the crowded, structured disk HST's resolved-galaxy fields show (M31, M33,
NGC 300: the Local Group and Sculptor disks of our targets), on top of the scene above, from its
own random stream (:func:`crowd_resolved_galaxy`, :class:`LightStructure`):

* spiral arms: an m = 2 logarithmic spiral in the deprojected disk, pitch angle 10-30 deg
  (Sb-Sc spirals, Kennicutt 1981, AJ 86, 1847), arm/interarm intensity contrast 1.5-3 in V
  (Schweizer 1976, ApJS 31, 313; Elmegreen & Elmegreen 1984, ApJS 54, 127);
* dust lanes on the arms' inner (concave) edge, peak optical depth tau_V 0.5-1.5 (A_V 0.5-1.6 mag;
  White, Keel & Conselice 2000, ApJ 542, 761: tau_V ~ 1 in spiral arms), dimming disk light and
  the stars behind them;
* flocculent patchiness: a log-normal random field (sigma 0.25 dex in ln, 40-px correlation) on
  the disk light;
* star-forming knots (OB associations with their HII regions): Gaussian clumps of sigma 15-80 px
  (20-100 pc OB associations at 0.2-0.5 pc per pixel; Efremov 1995; HII region luminosity function
  dN/dL ∝ L^-2, Kennicutt, Edgar & Hodge 1989, ApJ 337, 761) along the arms, each with nebular
  light (F606W holds H-alpha and [OIII]) peaking at 0.2-2x the local disk light and 150-2000 young
  stars of m 19-28;
* crowded resolved stars: an old/intermediate disk population following the (armed, patchy) disk
  light at 0.02-0.06 stars/px² with m <= 28 at the disk centre, m 21-28, dN/dm ∝ 10^0.3m (RGB/AGB
  luminosity-function slope), anchored on PHAT's 117 million stars over ~0.5 deg² of M31's disk
  (Williams et al. 2014, ApJS 215, 9; Dalcanton et al. 2012, ApJS 200, 18): 18 stars/arcsec² =
  0.045 stars/px² on average, i.e. fields at their crowding limit (1 star per 10-30 px²), counted
  mostly in F814W, where red giants are 1-2 mag brighter than in F606W (hence 0.02-0.06 to m = 28
  here); the bright end is the AGB, ~1 mag above the RGB tip (M_I = -4.05, V - I ~ 1.5-2: V ~ 22
  at M31's distance modulus 24.5); and a
  young population on the arms, 0.004-0.015 stars/px² at arm crest, m 19-28 (blue/red supergiants
  down to the upper main sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.wcs import WCS

from crlib.errors import InputDataError
from crlib.simulate.geometry import FloatArray

if TYPE_CHECKING:
    from crlib.simulate.fluctuations import FluctuationTexture

CELL_PX = 8
"""Cell size (pixels) of the grid used to sample spatially varying densities."""

EXTRAGALACTIC_STAR_DENSITY = 5e-5
GALAXY_DENSITY = 2e-4
BACKGROUND_GALAXY_FACTOR = {"globular_cluster": 0.3, "extragalactic": 1.0, "resolved_galaxy": 0.5}


@dataclass(frozen=True)
class DiffuseLight:
    """A smooth Sérsic light distribution in visit-frame pixels.

    Attributes
    ----------
    u0, v0
        Centre in the visit frame, pixels.
    r_e
        Effective radius, pixels.
    n
        Sérsic index.
    axis_ratio, pa_rad
        Minor/major axis ratio and position angle of the major axis (from +u towards +v).
    central_rate
        Surface brightness at the centre, e- s⁻¹ pixel⁻¹.
    """

    u0: float
    v0: float
    r_e: float
    n: float
    axis_ratio: float
    pa_rad: float
    central_rate: float

    def rate(self, u: FloatArray, v: FloatArray) -> FloatArray:
        """Surface brightness (e- s⁻¹ pixel⁻¹) at visit-frame positions."""
        radius = elliptical_radius(u - self.u0, v - self.v0, self.axis_ratio, self.pa_rad)
        b_n = sersic_b(self.n)
        return self.central_rate * np.exp(-b_n * (radius / self.r_e) ** (1.0 / self.n))


@dataclass(frozen=True)
class Scene:
    """Everything on the sky of one visit.

    Attributes
    ----------
    field_type
        One of ``crlib.profiles.FIELD_TYPES``.
    frame
        Visit frame (astropy TAN WCS, no distortion).
    star_ra, star_dec, star_rate
        Point sources: positions (deg) and count rates (e-/s), shape (n_stars,).
    galaxy_ra, galaxy_dec, galaxy_rate, galaxy_re, galaxy_n, galaxy_axis_ratio, galaxy_pa
        Galaxies: positions (deg), count rates (e-/s), effective radii (px), Sérsic indices,
        axis ratios and position angles (rad, visit frame), shape (n_galaxies,).
    diffuse
        Diffuse light of a resolved galaxy, or ``None``.
    summary
        Scene numbers for ``visit.json``.
    structure
        Arms, dust, patchiness and HII regions modulating ``diffuse`` (crowded resolved galaxies),
        or ``None`` (smooth disk).
    fluctuations
        The grains of a structured disk's unresolved stars
        (:class:`crlib.simulate.fluctuations.FluctuationTexture`), or ``None`` (smooth light).
    """

    def diffuse_rate(self, u: FloatArray, v: FloatArray) -> FloatArray:
        """Diffuse surface brightness (e- s⁻¹ pixel⁻¹) at visit-frame positions (0 without a disk)."""
        if self.diffuse is None:
            return np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)))
        rate = self.diffuse.rate(u, v)
        if self.structure is None:
            return rate
        if self.fluctuations is None:
            return self.structure.apply(rate, u, v)
        # the grains are the starlight's; the HII regions' gas is smooth
        grainy = self.fluctuations.apply(self.structure.stellar(rate, u, v), u, v)
        return grainy + self.structure.sample(self.structure.nebular, u, v)

    field_type: str
    frame: WCS
    star_ra: FloatArray
    star_dec: FloatArray
    star_rate: FloatArray
    galaxy_ra: FloatArray
    galaxy_dec: FloatArray
    galaxy_rate: FloatArray
    galaxy_re: FloatArray
    galaxy_n: FloatArray
    galaxy_axis_ratio: FloatArray
    galaxy_pa: FloatArray
    diffuse: DiffuseLight | None = None
    summary: dict[str, float] = field(default_factory=dict)
    structure: LightStructure | None = None
    fluctuations: FluctuationTexture | None = None


#: Crowded resolved galaxies (``build_scene(..., crowded=True)``): see the module docstring for sources.
CROWD_GRID_PX = 4.0
"""Grid step (visit-frame px) of :class:`LightStructure` (its features are >= 5 px wide)."""
CROWD_DISTANCE_MODULUS = (27.0, 30.0)
"""Galaxy distance moduli, 2.5-10 Mpc: nearby star-forming disks as the LEGUS sample (3.5-12 Mpc; the paper's
resolved-galaxy test visit 13364/95) and the Sculptor/M81-group spirals (NGC 55, NGC 253, NGC 2403, M81 at
2-3.6 Mpc). M31/M33 (24.4-24.7) and NGC 300 (26.5) are 5-50x more crowded per unit of disk light; on such a
draw deepCR's TPR at 0.05% FPR fell to 18% (docs/simulator.md), far below the paper's resolved galaxies."""
CROWD_FIELD_MU = (20.5, 22.5)
"""V surface brightness (mag/arcsec²) of the disk at the field centre."""
CROWD_DISK_RE_PX = (5000.0, 30000.0)
CROWD_ANCHOR_RADIUS = (0.3, 1.5)
"""Field centre's radius in the disk plane, in units of r_e."""
PIXEL_MAG_OFFSET = 6.505
"""Magnitude of one 0.05" pixel relative to one arcsec² (-2.5 log10 0.0025)."""
CROWD_REFERENCE_MU = 21.5
CROWD_REFERENCE_DM = 24.47
CROWD_REFERENCE_PC_PER_PX = 0.19
"""M31 (distance modulus 24.47): densities below are for a mu_V = 21.5 disk at that distance."""
CROWD_OLD_DENSITY = (0.02, 0.06)
CROWD_OLD_BRIGHT_ABS = -3.5
CROWD_YOUNG_DENSITY = (0.004, 0.015)
CROWD_YOUNG_BRIGHT_ABS = -8.0
CROWD_BRIGHTEST_MAG = 17.0
CROWD_FAINTEST_MAG = 28.0
CROWD_LF_SLOPE = 0.3
CROWD_PITCH_DEG = (10.0, 30.0)
CROWD_ARM_CONTRAST = (1.5, 3.0)
CROWD_DUST_TAU = (0.5, 1.5)
CROWD_PATCH_SIGMA = 0.25
CROWD_PATCH_SCALE_PX = 40.0
CROWD_KNOTS_PER_MPX = (0.5, 2.0)
"""Star-forming knots per 10^6 px² on an arm crest of a mu_V = 21.5 disk at M31's distance."""
CROWD_KNOT_SIGMA_PC = (20.0, 100.0)
CROWD_KNOT_STARS = (150, 2000)
CROWD_KNOT_NEBULAR = (0.2, 2.0)


@dataclass(frozen=True)
class LightStructure:
    """Spiral arms, dust lanes, patchiness and HII regions of a crowded resolved galaxy.

    Grids over the scene box in the visit frame (step :data:`CROWD_GRID_PX`), sampled bilinearly.

    Attributes
    ----------
    u_min, v_min, step
        Visit-frame position of grid element ``[0, 0]`` and the grid step, pixels.
    arms
        Multiplicative arm x patchiness factor of the disk light (and of the old stars' density).
    arm_crest
        Arm profile in [0, 1] (1 on an arm crest): density of young stars and knots.
    tau
        Dust optical depth in V; disk light and stars are dimmed by ``exp(-tau)``.
    nebular
        Additive HII-region light, e- s⁻¹ pixel⁻¹.
    """

    u_min: float
    v_min: float
    step: float
    arms: FloatArray
    arm_crest: FloatArray
    tau: FloatArray
    nebular: FloatArray

    def sample(self, grid: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
        """Bilinear value of one of the grids at visit-frame positions (edge values outside)."""
        from scipy.ndimage import map_coordinates

        u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
        rows = ((v - self.v_min) / self.step).ravel()
        cols = ((u - self.u_min) / self.step).ravel()
        values = map_coordinates(grid, [rows, cols], order=1, mode="nearest")
        return values.reshape(np.broadcast_shapes(u.shape, v.shape))

    def stellar(self, rate: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
        """The disk's starlight: the smooth ``rate`` at ``(u, v)`` through the arms, patches and dust."""
        return rate * self.sample(self.arms * np.exp(-self.tau), u, v)

    def apply(self, rate: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
        """Structured surface brightness from the smooth disk's ``rate`` at ``(u, v)``."""
        return self.stellar(rate, u, v) + self.sample(self.nebular, u, v)


def sersic_b(n: float | FloatArray) -> FloatArray:
    """Sérsic ``b_n`` (Ciotti & Bertin 1999 approximation)."""
    n = np.asarray(n, dtype=float)
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def elliptical_radius(du: FloatArray, dv: FloatArray, axis_ratio: FloatArray | float, pa: FloatArray | float):
    """Elliptical radius (pixels along the major axis) of offsets ``du, dv``."""
    cos, sin = np.cos(pa), np.sin(pa)
    major = du * cos + dv * sin
    minor = -du * sin + dv * cos
    return np.sqrt(major**2 + (minor / axis_ratio) ** 2)


def magnitudes_to_rate(mag: FloatArray, zeropoint: float) -> FloatArray:
    """Count rate (e-/s) of AB magnitudes for a filter zero point."""
    return np.power(10.0, -0.4 * (mag - zeropoint))


def sample_magnitudes(rng: np.random.Generator, count: int, bright: float, faint: float, slope: float):
    """Magnitudes with dN/dm ∝ 10^(slope·m) between ``bright`` and ``faint`` (inverse CDF)."""
    lo, hi = 10.0 ** (slope * bright), 10.0 ** (slope * faint)
    return np.log10(lo + rng.random(count) * (hi - lo)) / slope


def sample_positions(
    rng: np.random.Generator, box: tuple[float, float, float, float], density
) -> tuple[FloatArray, FloatArray]:
    """Poisson-sample positions in ``box = (u_min, u_max, v_min, v_max)`` with a density function.

    ``density(u, v)`` returns objects per pixel² at cell centres; counts are Poisson per
    ``CELL_PX`` cell and positions uniform within a cell.
    """
    u_min, u_max, v_min, v_max = box
    u_edges = np.arange(u_min, u_max, CELL_PX)
    v_edges = np.arange(v_min, v_max, CELL_PX)
    uu, vv = np.meshgrid(u_edges + CELL_PX / 2, v_edges + CELL_PX / 2)
    expected = np.broadcast_to(density(uu, vv), uu.shape) * CELL_PX**2
    counts = rng.poisson(expected).ravel()
    cell_u = np.repeat(uu.ravel() - CELL_PX / 2, counts)
    cell_v = np.repeat(vv.ravel() - CELL_PX / 2, counts)
    total = int(counts.sum())
    return cell_u + rng.random(total) * CELL_PX, cell_v + rng.random(total) * CELL_PX


def _galaxies(rng: np.random.Generator, box, density: float, zeropoint: float) -> dict[str, FloatArray]:
    u, v = sample_positions(rng, box, lambda uu, vv: np.full(uu.shape, density))
    count = u.size
    mag = sample_magnitudes(rng, count, 18.0, 28.0, 0.3)
    r_e = 8.0 * 10.0 ** (-0.12 * (mag - 22.0)) * rng.lognormal(0.0, 0.3, count)
    return {
        "u": u,
        "v": v,
        "rate": magnitudes_to_rate(mag, zeropoint),
        "re": np.clip(r_e, 0.8, 60.0),
        "n": np.where(rng.random(count) < 0.65, 1.0, 4.0),
        "q": rng.uniform(0.3, 1.0, count),
        "pa": rng.uniform(0.0, np.pi, count),
    }


def _log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def crowd_resolved_galaxy(
    rng: np.random.Generator, disk: DiffuseLight, box: tuple[float, float, float, float], zeropoint: float
) -> tuple[DiffuseLight, LightStructure, dict[str, FloatArray], dict[str, float]]:
    """The disk, arms, dust, patchiness, star-forming knots and crowded stars of a resolved galaxy.

    The field lies inside the disk: an exponential disk (orientation of ``disk``) of V surface
    brightness :data:`CROWD_FIELD_MU` at the anchor. The galaxy's distance modulus
    (:data:`CROWD_DISTANCE_MODULUS`) sets how many of its stars are resolved (brighter than m = 28)
    per unit of disk light, their bright end, and the knots' sizes in pixels.

    Parameters
    ----------
    rng
        The crowding's own random stream (so the rest of the scene is drawn as without it).
    disk
        The smooth scene's disk: its axis ratio and position angle are kept.
    box
        ``(u_min, u_max, v_min, v_max)`` region of the visit frame to populate, pixels.
    zeropoint
        Filter AB zero point: surface brightnesses in magnitudes to e- s⁻¹ pixel⁻¹.

    Returns
    -------
    tuple
        ``(disk, structure, stars, summary)``: the new smooth disk (it replaces ``disk``),
        :class:`LightStructure`; ``stars`` with visit-frame ``u``, ``v`` and ``mag`` (before dust)
        of the added stars; numbers for ``visit.json``.
    """
    from scipy.ndimage import gaussian_filter

    # the galaxy's numbers first, so that they do not depend on the size of the box
    distance_modulus = rng.uniform(*CROWD_DISTANCE_MODULUS)
    field_mu = rng.uniform(*CROWD_FIELD_MU)
    r_e = float(_log_uniform(rng, *CROWD_DISK_RE_PX))
    anchor_radius = rng.uniform(*CROWD_ANCHOR_RADIUS) * r_e
    anchor_angle = rng.uniform(0.0, 2.0 * np.pi)
    pitch = np.radians(rng.uniform(*CROWD_PITCH_DEG))
    phase0 = rng.uniform(0.0, 2.0 * np.pi)
    contrast = rng.uniform(*CROWD_ARM_CONTRAST)
    tau_peak = rng.uniform(*CROWD_DUST_TAU)
    knot_rate = rng.uniform(*CROWD_KNOTS_PER_MPX) * 1e-6
    old_density = rng.uniform(*CROWD_OLD_DENSITY)
    arm_density = rng.uniform(*CROWD_YOUNG_DENSITY)

    # the disk: n = 1, centred so that the anchor (0, 0) lies at anchor_radius in the disk plane
    ref_rate = float(magnitudes_to_rate(np.asarray(CROWD_REFERENCE_MU + PIXEL_MAG_OFFSET), zeropoint))
    field_rate = float(magnitudes_to_rate(np.asarray(field_mu + PIXEL_MAG_OFFSET), zeropoint))
    cos, sin = np.cos(disk.pa_rad), np.sin(disk.pa_rad)
    major = anchor_radius * np.cos(anchor_angle)
    minor = anchor_radius * np.sin(anchor_angle) * disk.axis_ratio
    centre_u, centre_v = -(major * cos - minor * sin), -(major * sin + minor * cos)
    disk = DiffuseLight(
        u0=float(centre_u),
        v0=float(centre_v),
        r_e=r_e,
        n=1.0,
        axis_ratio=disk.axis_ratio,
        pa_rad=disk.pa_rad,
        central_rate=field_rate * float(np.exp(sersic_b(1.0) * anchor_radius / r_e)),
    )
    # resolved stars per unit disk light: dN/dM ∝ 10^0.3M, so 10^(-0.3 (DM - 24.5)) of M31's count
    resolved = 10.0 ** (-CROWD_LF_SLOPE * (distance_modulus - CROWD_REFERENCE_DM))
    pc_per_px = 10.0 ** (distance_modulus / 5.0 + 1.0) * 0.05 / 206265.0

    u_min, u_max, v_min, v_max = box
    step = CROWD_GRID_PX
    gu = u_min + step * np.arange(int(np.ceil((u_max - u_min) / step)) + 2)
    gv = v_min + step * np.arange(int(np.ceil((v_max - v_min) / step)) + 2)
    uu, vv = np.meshgrid(gu, gv)
    du, dv = uu - disk.u0, vv - disk.v0
    radius = np.hypot(du * cos + dv * sin, (-du * sin + dv * cos) / disk.axis_ratio)  # disk plane
    theta = np.arctan2((-du * sin + dv * cos) / disk.axis_ratio, du * cos + dv * sin)
    # m = 2 trailing logarithmic spiral; the arms fade in outside 0.3 r_e (no winding to the centre)
    phase = 2.0 * (theta - np.log(np.maximum(radius, 1.0) / disk.r_e) / np.tan(pitch)) + phase0
    fade = 1.0 - np.exp(-((radius / (0.3 * disk.r_e)) ** 2))
    crest = fade * ((1.0 + np.cos(phase)) / 2.0) ** 6
    mean_crest = 924.0 / 4096.0  # azimuthal mean of ((1 + cos)/2)^6
    arms = (1.0 + (contrast - 1.0) * crest) / (1.0 + (contrast - 1.0) * mean_crest * fade)
    # the lane sits 0.5 rad of phase towards smaller radius (the concave side) of each crest
    tau = tau_peak * fade * ((1.0 + np.cos(phase - 0.5)) / 2.0) ** 24
    patch = gaussian_filter(rng.standard_normal(uu.shape), CROWD_PATCH_SCALE_PX / step, mode="wrap")
    patch *= CROWD_PATCH_SIGMA / max(float(patch.std()), 1e-12)
    arms = arms * np.exp(patch - CROWD_PATCH_SIGMA**2 / 2.0)
    nebular = np.zeros_like(uu)
    structure = LightStructure(float(gu[0]), float(gv[0]), step, arms, crest, tau, nebular)

    def light(u, v):  # disk light in units of a mu_V = 21.5 mag/arcsec² disk
        return disk.rate(u, v) / ref_rate

    # star-forming knots along the arms, each an OB association inside its HII region
    area_scale = (pc_per_px / CROWD_REFERENCE_PC_PER_PX) ** 2  # more of the galaxy per pixel farther out
    ku, kv = sample_positions(
        rng, box, lambda u, v: knot_rate * area_scale * light(u, v) * structure.sample(crest, u, v)
    )
    n_knots = ku.size
    knot_sigma = np.clip(_log_uniform(rng, *CROWD_KNOT_SIGMA_PC, n_knots) / pc_per_px, 5.0, 400.0)
    knot_stars = np.rint(resolved * _log_uniform(rng, *CROWD_KNOT_STARS, n_knots)).astype(np.int64)
    knot_peak = rng.uniform(*CROWD_KNOT_NEBULAR, n_knots) * disk.rate(ku, kv) * structure.sample(arms, ku, kv)
    for k in range(n_knots):
        width = 1.5 * knot_sigma[k]  # the HII region around the association
        reach = 4.0 * width
        rows = slice(max(int((kv[k] - reach - gv[0]) / step), 0), int((kv[k] + reach - gv[0]) / step) + 2)
        cols = slice(max(int((ku[k] - reach - gu[0]) / step), 0), int((ku[k] + reach - gu[0]) / step) + 2)
        r2 = (uu[rows, cols] - ku[k]) ** 2 + (vv[rows, cols] - kv[k]) ** 2
        nebular[rows, cols] += knot_peak[k] * np.exp(-r2 / (2.0 * width**2))
    young_u = np.repeat(ku, knot_stars) + rng.normal(0.0, np.repeat(knot_sigma, knot_stars))
    young_v = np.repeat(kv, knot_stars) + rng.normal(0.0, np.repeat(knot_sigma, knot_stars))
    inside = (young_u >= u_min) & (young_u < u_max) & (young_v >= v_min) & (young_v < v_max)
    young_u, young_v = young_u[inside], young_v[inside]

    old_u, old_v = sample_positions(
        rng, box, lambda u, v: old_density * resolved * light(u, v) * structure.sample(arms, u, v)
    )
    arm_u, arm_v = sample_positions(
        rng, box, lambda u, v: arm_density * resolved * light(u, v) * structure.sample(crest, u, v)
    )
    young_u, young_v = np.concatenate([young_u, arm_u]), np.concatenate([young_v, arm_v])
    old_bright = max(CROWD_OLD_BRIGHT_ABS + distance_modulus, CROWD_BRIGHTEST_MAG)
    young_bright = max(CROWD_YOUNG_BRIGHT_ABS + distance_modulus, CROWD_BRIGHTEST_MAG)
    mags = np.concatenate(
        [
            sample_magnitudes(rng, old_u.size, old_bright, CROWD_FAINTEST_MAG, CROWD_LF_SLOPE),
            sample_magnitudes(rng, young_u.size, young_bright, CROWD_FAINTEST_MAG, CROWD_LF_SLOPE),
        ]
    )
    stars = {"u": np.concatenate([old_u, young_u]), "v": np.concatenate([old_v, young_v]), "mag": mags}
    summary = {
        "galaxy_u": disk.u0,
        "galaxy_v": disk.v0,
        "galaxy_re_px": disk.r_e,
        "crowd_distance_modulus": float(distance_modulus),
        "crowd_field_mu_v": float(field_mu),
        "crowd_field_rate": field_rate,
        "crowd_pitch_deg": float(np.degrees(pitch)),
        "crowd_arm_contrast": float(contrast),
        "crowd_dust_tau_v": float(tau_peak),
        "crowd_old_density_m31": float(old_density),
        "crowd_arm_young_density_m31": float(arm_density),
        "crowd_knots": float(n_knots),
        "crowd_old_stars": float(old_u.size),
        "crowd_young_stars": float(young_u.size),
    }
    return disk, structure, stars, summary


def read_gaia_catalog(path: Path) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Read a whitespace table ``ra dec G-mag`` (``#`` comments), e.g. the NGC 6791 Gaia DR2 list.

    Raises
    ------
    InputDataError
        If the file is missing or not three numeric columns.
    """
    try:
        table = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputDataError(
            path, f"cannot read Gaia catalog ({exc})", fix="pass a 'ra dec mag' text file"
        ) from exc
    if table.shape[1] < 3 or table.shape[0] == 0:
        raise InputDataError(path, "Gaia catalog needs rows of 'ra dec mag'", fix="check the file's columns")
    return table[:, 0], table[:, 1], table[:, 2]


def build_scene(
    rng: np.random.Generator,
    *,
    field_type: str,
    frame: WCS,
    box: tuple[float, float, float, float],
    zeropoint: float,
    gaia: tuple[FloatArray, FloatArray, FloatArray] | None = None,
    crowded_rng: np.random.Generator | None = None,
) -> Scene:
    """Draw a visit's sky.

    Parameters
    ----------
    rng
        Random generator (the scene's own stream).
    field_type
        ``globular_cluster``, ``extragalactic`` or ``resolved_galaxy``.
    frame
        Visit frame; its pixel (0, 0) is the anchor.
    box
        ``(u_min, u_max, v_min, v_max)`` region of the visit frame to populate, pixels.
    zeropoint
        Filter AB zero point (magnitude of 1 e-/s).
    gaia
        ``(ra, dec, mag)`` arrays: place the stars at these real positions instead of drawing them.
    crowded_rng
        Make a resolved galaxy crowded and structured (:func:`crowd_resolved_galaxy`), drawing
        from this generator; ``None`` (or another field type) leaves the scene as without it,
        bit for bit.

    Returns
    -------
    Scene
    """
    star_u: list[FloatArray] = []
    star_v: list[FloatArray] = []
    star_mag: list[FloatArray] = []
    diffuse = None
    structure: LightStructure | None = None
    summary: dict[str, float] = {}

    def add_stars(density, bright: float, faint: float, slope: float) -> None:
        u, v = sample_positions(rng, box, density)
        star_u.append(u)
        star_v.append(v)
        star_mag.append(sample_magnitudes(rng, u.size, bright, faint, slope))

    if field_type == "globular_cluster":
        u0, v0 = rng.uniform(-300.0, 300.0, 2)
        r_c = rng.uniform(120.0, 350.0)
        r_t = 40.0 * r_c
        central = rng.uniform(0.01, 0.025)
        edge = 1.0 / np.sqrt(1.0 + (r_t / r_c) ** 2)
        norm = (1.0 - edge) ** 2

        def king(uu, vv):
            r = np.hypot(uu - u0, vv - v0)
            profile = np.clip(1.0 / np.sqrt(1.0 + (r / r_c) ** 2) - edge, 0.0, None) ** 2
            return central * profile / norm

        summary = {"cluster_u": float(u0), "cluster_v": float(v0), "core_radius_px": float(r_c)}
        if gaia is None:
            add_stars(king, 15.0, 27.0, 0.3)
    elif field_type == "resolved_galaxy":
        diffuse = DiffuseLight(
            u0=float(rng.uniform(-400.0, 400.0)),
            v0=float(rng.uniform(-400.0, 400.0)),
            r_e=float(rng.uniform(800.0, 2000.0)),
            n=float(rng.choice([1.0, 2.0])),
            axis_ratio=float(rng.uniform(0.4, 0.9)),
            pa_rad=float(rng.uniform(0.0, np.pi)),
            central_rate=float(rng.uniform(0.3, 1.5)),
        )
        crowding = rng.uniform(0.01, 0.03)
        summary = {"galaxy_u": diffuse.u0, "galaxy_v": diffuse.v0, "galaxy_re_px": diffuse.r_e}
        if gaia is None:
            light = diffuse

            def resolved(uu, vv):
                return crowding * light.rate(uu, vv) / light.central_rate

            add_stars(resolved, 21.0, 28.0, 0.35)
    elif field_type != "extragalactic":
        raise ValueError(f"unknown field type {field_type!r}")
    if gaia is None:
        add_stars(lambda uu, vv: np.full(uu.shape, EXTRAGALACTIC_STAR_DENSITY), 16.0, 27.0, 0.15)
    galaxies = _galaxies(rng, box, GALAXY_DENSITY * BACKGROUND_GALAXY_FACTOR[field_type], zeropoint)
    if diffuse is not None and crowded_rng is not None and gaia is None:
        diffuse, structure, crowd, crowd_summary = crowd_resolved_galaxy(crowded_rng, diffuse, box, zeropoint)
        star_u.append(crowd["u"])
        star_v.append(crowd["v"])
        star_mag.append(crowd["mag"])
        summary.update(crowd_summary)
    if gaia is None:
        us, vs, mags = np.concatenate(star_u), np.concatenate(star_v), np.concatenate(star_mag)
        if structure is not None:  # stars behind the dust lanes are dimmed like the disk light
            mags = mags + 2.5 / np.log(10.0) * structure.sample(structure.tau, us, vs)
        star_ra, star_dec = frame.wcs_pix2world(us, vs, 0)
    else:
        ra, dec, mags = gaia
        us, vs = frame.wcs_world2pix(ra, dec, 0)
        inside = (us >= box[0]) & (us < box[1]) & (vs >= box[2]) & (vs < box[3])
        star_ra, star_dec, mags = ra[inside], dec[inside], mags[inside]

    galaxy_ra, galaxy_dec = frame.wcs_pix2world(galaxies["u"], galaxies["v"], 0)
    summary.update({"n_stars": float(len(star_ra)), "n_galaxies": float(len(galaxy_ra))})
    return Scene(
        field_type=field_type,
        frame=frame,
        star_ra=np.asarray(star_ra, dtype=float),
        star_dec=np.asarray(star_dec, dtype=float),
        star_rate=magnitudes_to_rate(np.asarray(mags, dtype=float), zeropoint),
        galaxy_ra=np.asarray(galaxy_ra, dtype=float),
        galaxy_dec=np.asarray(galaxy_dec, dtype=float),
        galaxy_rate=galaxies["rate"],
        galaxy_re=galaxies["re"],
        galaxy_n=galaxies["n"],
        galaxy_axis_ratio=galaxies["q"],
        galaxy_pa=galaxies["pa"],
        diffuse=diffuse,
        summary=summary,
        structure=structure,
    )
