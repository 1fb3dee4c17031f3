"""Render a scene into one chip window through that exposure's real WCS (noiseless, e-/s).

Point sources are Moffat stamps (β = 2.5, FWHM ≈ 2 px like the ACS/WFC PSF core) evaluated at
their sub-pixel positions; galaxies are Sérsic stamps; diffuse light is evaluated per pixel on
visit-frame coordinates interpolated from a coarse grid of exact WCS transformations (times the arms,
dust and HII regions of a crowded resolved galaxy, :class:`crlib.simulate.scene.LightStructure`). Stamps are
accumulated with ``np.bincount`` (no full-image convolutions).
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from crlib.interpolation import interpolation_matrix
from crlib.simulate.geometry import ChipWindow, FloatArray
from crlib.simulate.scene import Scene, elliptical_radius, sersic_b

MOFFAT_BETA = 2.5
#: (upper flux limit in e-, stamp half-width in px) tiers for point sources.
STAR_STAMP_TIERS = ((2e4, 4), (1e6, 10), (np.inf, 30))
GALAXY_STAMP_TIERS = (2.0, 5.0, 12.0, 25.0, 60.0)
DIFFUSE_GRID_PX = 64


def moffat_alpha(fwhm_px: float, beta: float = MOFFAT_BETA) -> float:
    """Moffat core width α (px) for a FWHM."""
    return fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_shape(dx: FloatArray, dy: FloatArray, alpha: float) -> FloatArray:
    """Moffat profile ``(1 + r²/α²)^-β`` at offsets ``dx, dy`` (px), 1 at the centre (not normalised)."""
    return (1.0 + (dx**2 + dy**2) / alpha**2) ** (-MOFFAT_BETA)


def _accumulate(image: FloatArray, x: FloatArray, y: FloatArray, half: int, values_fn) -> None:
    """Add stamps of half-width ``half`` centred at the nearest pixels of ``(x, y)``."""
    if x.size == 0:
        return
    ny, nx = image.shape
    offsets = np.arange(-half, half + 1)
    ix = np.rint(x).astype(np.int64)
    iy = np.rint(y).astype(np.int64)
    px = ix[:, None, None] + offsets[None, None, :]
    py = iy[:, None, None] + offsets[None, :, None]
    values = values_fn(px - x[:, None, None], py - y[:, None, None])
    inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    inside = np.broadcast_to(inside, values.shape)
    flat = (np.broadcast_to(py, values.shape) * nx + np.broadcast_to(px, values.shape))[inside]
    image += np.bincount(flat, weights=values[inside], minlength=ny * nx).reshape(ny, nx)


def add_point_sources(
    image: FloatArray,
    x: FloatArray,
    y: FloatArray,
    flux: FloatArray,
    fwhm_px: float,
    *,
    psf_filter: str | None = None,
) -> None:
    """Add point sources (total ``flux`` e- each) at window pixel positions ``x, y``.

    With ``psf_filter`` (e.g. ``"F606W"``) the stars are drizzlepac's ACS/WFC PSF of that filter
    (:mod:`crlib.simulate.psf`), otherwise Moffat profiles of ``fwhm_px``.
    """
    if psf_filter is not None:
        from crlib.simulate.psf import PSF_STAMP_TIERS, psf_values

        lower = 0.0
        for upper, half in PSF_STAMP_TIERS:
            chosen = np.flatnonzero((flux >= lower) & (flux < upper))
            lower = upper
            chunk = max(1, 4_000_000 // (2 * half + 1) ** 2)  # bounded temporary arrays
            for start in range(0, chosen.size, chunk):
                part = chosen[start : start + chunk]
                amp = flux[part][:, None, None]
                _accumulate(
                    image,
                    x[part],
                    y[part],
                    half,
                    lambda dx, dy, amp=amp: amp * psf_values(psf_filter, dx, dy),
                )
        return
    alpha = moffat_alpha(fwhm_px)
    amplitude = flux * (MOFFAT_BETA - 1.0) / (np.pi * alpha**2)
    lower = 0.0
    for upper, half in STAR_STAMP_TIERS:
        pick = (flux >= lower) & (flux < upper)
        lower = upper
        amp = amplitude[pick][:, None, None]
        _accumulate(
            image,
            x[pick],
            y[pick],
            half,
            lambda dx, dy, amp=amp: amp * moffat_shape(dx, dy, alpha),
        )


def add_galaxies(
    image: FloatArray,
    x: FloatArray,
    y: FloatArray,
    flux: FloatArray,
    r_e: FloatArray,
    n: FloatArray,
    axis_ratio: FloatArray,
    pa: FloatArray,
    fwhm_px: float,
) -> None:
    """Add Sérsic galaxies (total ``flux`` e- each within a stamp of ≈5 r_e) at window positions."""
    soft = fwhm_px / 2.0  # softening: PSF-smoothed cusp
    lower = 0.0
    for upper in GALAXY_STAMP_TIERS:
        pick = (r_e >= lower) & (r_e < upper)
        lower = upper
        if not pick.any():
            continue
        half = int(np.ceil(5.0 * upper)) if upper < 60 else 150
        params = [arr[pick][:, None, None] for arr in (flux, r_e, n, axis_ratio, pa)]

        def profile(dx, dy, params=params):
            f, re, nn, q, angle = params
            radius = np.sqrt(elliptical_radius(dx, dy, q, angle) ** 2 + soft**2)
            shape = np.exp(-sersic_b(nn) * (radius / re) ** (1.0 / nn))
            return f * shape / shape.sum(axis=(1, 2), keepdims=True)

        _accumulate(image, x[pick], y[pick], half, profile)


def window_to_frame(wcs: WCS, window: ChipWindow, frame: WCS) -> tuple[FloatArray, FloatArray]:
    """Visit-frame coordinates (u, v) of every pixel of a window, shape ``window.shape`` each.

    Exact WCS transformations on a ``DIFFUSE_GRID_PX`` grid, bilinearly interpolated (the mapping
    is smooth, interpolation error ≪ 0.01 px).
    """
    gx = np.unique(np.append(np.arange(0, window.nx, DIFFUSE_GRID_PX), window.nx - 1)).astype(float)
    gy = np.unique(np.append(np.arange(0, window.ny, DIFFUSE_GRID_PX), window.ny - 1)).astype(float)
    mesh_x, mesh_y = np.meshgrid(gx + window.x0, gy + window.y0)
    ra, dec = wcs.all_pix2world(mesh_x, mesh_y, 0)
    u_grid, v_grid = frame.wcs_world2pix(ra, dec, 0)
    weights_x = interpolation_matrix(gx, window.nx)
    weights_y = interpolation_matrix(gy, window.ny)
    return weights_y @ u_grid @ weights_x.T, weights_y @ v_grid @ weights_x.T


def render_window(
    scene: Scene,
    wcs: WCS,
    window: ChipWindow,
    *,
    exptime_s: float,
    fwhm_px: float,
    psf_filter: str | None = None,
) -> FloatArray:
    """Noiseless source signal (e-, no sky) of one chip window.

    Parameters
    ----------
    scene
        The visit's sky.
    wcs
        Full-chip *true* WCS of this exposure and chip (with distortion).
    window
        Part of the chip being written.
    exptime_s
        Exposure time, seconds.
    fwhm_px
        PSF FWHM, pixels (Moffat stars, galaxy softening).
    psf_filter
        Render stars with drizzlepac's PSF of this filter instead of the Moffat profile.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``window.shape``, electrons.
    """
    image = np.zeros(window.shape)
    margin = 160.0
    for ra, dec, kind in (
        (scene.star_ra, scene.star_dec, "stars"),
        (scene.galaxy_ra, scene.galaxy_dec, "gal"),
    ):
        if ra.size == 0:
            continue
        x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-6, quiet=True)
        x = x - window.x0
        y = y - window.y0
        near = (x > -margin) & (x < window.nx + margin) & (y > -margin) & (y < window.ny + margin)
        if kind == "stars":
            add_point_sources(
                image,
                x[near],
                y[near],
                scene.star_rate[near] * exptime_s,
                fwhm_px,
                psf_filter=psf_filter,
            )
        else:
            add_galaxies(
                image,
                x[near],
                y[near],
                scene.galaxy_rate[near] * exptime_s,
                scene.galaxy_re[near],
                scene.galaxy_n[near],
                scene.galaxy_axis_ratio[near],
                scene.galaxy_pa[near],
                fwhm_px,
            )
    if scene.diffuse is not None:
        u, v = window_to_frame(wcs, window, scene.frame)
        image += scene.diffuse_rate(u, v) * exptime_s
    return image
