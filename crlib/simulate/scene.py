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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from crlib.errors import InputDataError
from crlib.simulate.geometry import FloatArray

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
    """

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

    Returns
    -------
    Scene
    """
    star_u: list[FloatArray] = []
    star_v: list[FloatArray] = []
    star_mag: list[FloatArray] = []
    diffuse = None
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
        us, vs, mags = np.concatenate(star_u), np.concatenate(star_v), np.concatenate(star_mag)
        star_ra, star_dec = frame.wcs_pix2world(us, vs, 0)
    else:
        ra, dec, mags = gaia
        us, vs = frame.wcs_world2pix(ra, dec, 0)
        inside = (us >= box[0]) & (us < box[1]) & (vs >= box[2]) & (vs < box[3])
        star_ra, star_dec, mags = ra[inside], dec[inside], mags[inside]

    galaxies = _galaxies(rng, box, GALAXY_DENSITY * BACKGROUND_GALAXY_FACTOR[field_type], zeropoint)
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
    )
