"""Cosmic-ray hits: on-orbit event rate, track/compact/worm morphology, Landau-like charge.

Model (per chip window, per exposure):

* Events arrive as a Poisson process at ``rate_per_cm2_s`` (ACS/WFC: 1.2 cm⁻² s⁻¹) over the window
  plus a ``MAX_TRACK_PX`` margin (so tracks entering from outside are not lost).
* A penetrating particle crosses the depletion layer (thickness ≈ one 15 µm pixel) at zenith angle
  θ with cos θ = √U (isotropic flux through a plane): projected length ``depth · tan θ`` pixels,
  from compact hits (θ ≈ 0) to long tracks, capped at ``MAX_TRACK_PX``.
* Charge: a Moyal (Landau approximation) draw with most probable value ``mpv_e / cos θ``
  (path length in silicon), deposited uniformly along the track in 0.25-px steps.
* ``worm_fraction`` of events are low-energy electrons: curly random walks of 4–20 px carrying
  log-normal charge around 600 e-.
* Charge diffuses with a Gaussian of ``diffusion_sigma_px``, integrated over pixels.

The truth mask is ``charge >= mask_threshold_e``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from crlib.simulate.geometry import FloatArray

MAX_TRACK_PX = 60.0
STEP_PX = 0.25


@dataclass(frozen=True, slots=True)
class CosmicRayModel:
    """Parameters of the cosmic-ray model (see module docstring)."""

    rate_per_cm2_s: float
    pixel_area_cm2: float
    depletion_depth_px: float = 1.0
    mpv_e: float = 900.0
    moyal_width: float = 0.12
    worm_fraction: float = 0.08
    diffusion_sigma_px: float = 0.4
    mask_threshold_e: float = 5.0

    def expected_events(self, n_pixels: float, exptime_s: float) -> float:
        """Mean number of events hitting ``n_pixels`` in ``exptime_s``."""
        return self.rate_per_cm2_s * self.pixel_area_cm2 * n_pixels * exptime_s


@dataclass(frozen=True, slots=True)
class CosmicRayHits:
    """Deposited CR charge of one chip window.

    Attributes
    ----------
    charge
        float32 (ny, nx), electrons.
    n_events
        Events drawn (including those starting in the margin).
    """

    charge: np.ndarray
    n_events: int

    def mask(self, threshold_e: float) -> np.ndarray:
        """uint8 mask, 1 where the CR charge is at least ``threshold_e``."""
        return (self.charge >= threshold_e).astype(np.uint8)


def _track_paths(rng: np.random.Generator, model: CosmicRayModel, count: int):
    mu = np.sqrt(rng.random(count))
    mu = np.maximum(mu, 1e-3)
    length = np.minimum(model.depletion_depth_px * np.sqrt(1.0 - mu**2) / mu, MAX_TRACK_PX)
    mpv = model.mpv_e / mu
    mpv = np.minimum(mpv, model.mpv_e * (MAX_TRACK_PX + 1.0))
    charge = stats.moyal.rvs(loc=mpv, scale=model.moyal_width * mpv, size=count, random_state=rng)
    charge = np.maximum(charge, 0.3 * mpv)
    angle = rng.uniform(0.0, 2.0 * np.pi, count)
    steps = np.maximum(1, np.ceil(length / STEP_PX).astype(np.int64)) + 1
    event = np.repeat(np.arange(count), steps)
    start = np.cumsum(steps) - steps
    fraction = (np.arange(event.size) - start[event]) / np.maximum(steps[event] - 1, 1)
    dx = fraction * length[event] * np.cos(angle[event])
    dy = fraction * length[event] * np.sin(angle[event])
    return event, dx, dy, (charge / steps)[event]


def _worm_paths(rng: np.random.Generator, count: int):
    length = rng.uniform(4.0, 20.0, count)
    charge = rng.lognormal(np.log(600.0), 0.5, count)
    steps = np.ceil(length / STEP_PX).astype(np.int64) + 1
    event = np.repeat(np.arange(count), steps)
    start = np.cumsum(steps) - steps
    turn = rng.normal(0.0, 0.35, event.size)
    turn[start] = rng.uniform(0.0, 2.0 * np.pi, count)
    heading = np.cumsum(turn)
    heading -= np.repeat(np.cumsum(turn)[start] - turn[start], steps)
    step_x = STEP_PX * np.cos(heading)
    step_y = STEP_PX * np.sin(heading)
    step_x[start] = 0.0
    step_y[start] = 0.0
    cum_x, cum_y = np.cumsum(step_x), np.cumsum(step_y)
    dx = cum_x - np.repeat(cum_x[start], steps)
    dy = cum_y - np.repeat(cum_y[start], steps)
    return event, dx, dy, (charge / steps)[event]


def deposit(
    shape: tuple[int, int], x: FloatArray, y: FloatArray, charge: FloatArray, sigma_px: float
) -> FloatArray:
    """Spread point charges over 3x3 pixels with a pixel-integrated Gaussian (electrons, float64)."""
    ny, nx = shape
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    offsets = np.array([-1, 0, 1])
    edges = offsets[None, :] - (x - ix)[:, None]
    wx = special.ndtr((edges + 0.5) / sigma_px) - special.ndtr((edges - 0.5) / sigma_px)
    edges = offsets[None, :] - (y - iy)[:, None]
    wy = special.ndtr((edges + 0.5) / sigma_px) - special.ndtr((edges - 0.5) / sigma_px)
    weights = wy[:, :, None] * wx[:, None, :]
    weights /= weights.sum(axis=(1, 2), keepdims=True)
    px = ix[:, None, None] + offsets[None, None, :]
    py = iy[:, None, None] + offsets[None, :, None]
    values = weights * charge[:, None, None]
    inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    inside = np.broadcast_to(inside, values.shape)
    flat = (np.broadcast_to(py, values.shape) * nx + np.broadcast_to(px, values.shape))[inside]
    summed = np.bincount(flat, weights=values[inside], minlength=ny * nx)
    return np.asarray(summed, dtype=np.float64).reshape(ny, nx)


def inject_cosmic_rays(
    rng: np.random.Generator, shape: tuple[int, int], *, exptime_s: float, model: CosmicRayModel
) -> CosmicRayHits:
    """Draw the CR hits of one exposure on one chip window.

    Parameters
    ----------
    rng
        Random generator (the exposure/chip's CR stream).
    shape
        Window shape (ny, nx), pixels.
    exptime_s
        Exposure time, seconds (CRs accumulate over the exposure).
    model
        Rate, morphology and charge parameters.

    Returns
    -------
    CosmicRayHits
    """
    ny, nx = shape
    pad = MAX_TRACK_PX
    area = (nx + 2 * pad) * (ny + 2 * pad)
    count = int(rng.poisson(model.expected_events(area, exptime_s)))
    x0 = rng.uniform(-pad, nx + pad, count)
    y0 = rng.uniform(-pad, ny + pad, count)
    is_worm = rng.random(count) < model.worm_fraction
    tracks = np.flatnonzero(~is_worm)
    worms = np.flatnonzero(is_worm)
    xs, ys, qs = [], [], []
    for members, paths in (
        (tracks, _track_paths(rng, model, tracks.size)),
        (worms, _worm_paths(rng, worms.size)),
    ):
        event, dx, dy, q = paths
        xs.append(x0[members][event] + dx)
        ys.append(y0[members][event] + dy)
        qs.append(q)
    x, y, q = np.concatenate(xs), np.concatenate(ys), np.concatenate(qs)
    keep = (x > -2) & (x < nx + 1) & (y > -2) & (y < ny + 1)
    charge = deposit(shape, x[keep], y[keep], q[keep], model.diffusion_sigma_px)
    return CosmicRayHits(charge=charge.astype(np.float32), n_events=count)


def mean_pixels_per_event(model: CosmicRayModel, *, samples: int = 20000, seed: int = 12345) -> float:
    """Mean number of masked pixels per isolated event (Monte Carlo of the same morphology model).

    Events are placed on a grid 2·``MAX_TRACK_PX`` apart so none overlap.
    """
    rng = np.random.default_rng(seed)
    spacing = int(2 * MAX_TRACK_PX) + 4
    per_side = int(np.ceil(np.sqrt(samples)))
    total = 0
    done = 0
    row_events = per_side
    while done < samples:
        n = min(row_events, samples - done)
        shape = (spacing, spacing * n)
        centres_x = spacing * np.arange(n) + spacing / 2.0
        centres_y = np.full(n, spacing / 2.0)
        is_worm = rng.random(n) < model.worm_fraction
        xs, ys, qs = [], [], []
        tracks, worms = np.flatnonzero(~is_worm), np.flatnonzero(is_worm)
        for members, paths in (
            (tracks, _track_paths(rng, model, tracks.size)),
            (worms, _worm_paths(rng, worms.size)),
        ):
            event, dx, dy, q = paths
            xs.append(centres_x[members][event] + np.clip(dx, -spacing / 2 + 2, spacing / 2 - 2))
            ys.append(centres_y[members][event] + np.clip(dy, -spacing / 2 + 2, spacing / 2 - 2))
            qs.append(q)
        charge = deposit(
            shape, np.concatenate(xs), np.concatenate(ys), np.concatenate(qs), model.diffusion_sigma_px
        )
        total += int((charge >= model.mask_threshold_e).sum())
        done += n
    return total / samples
