"""Multi-frame CR masks from a stack of equivalent exposures (the numina ``crmasks`` method).

For N >= 3 exposures of the same field on the same pixel grid (CR-SPLIT-like, undithered):

1. stack the frames (optionally scaled by ``flux_factor``: none / auto / explicit list) and form the
   minimum, maximum, median and mean images;
2. build a *simulated diagnostic diagram* -- (median - min) against min, and (frame - min) against
   min -- from N noisy realisations of the median image with the detector's gain, read noise and
   bias; in bins of min, the value above which one pixel is expected by chance is a
   "one-expected-pixel" point;
3. fit a spline through those points as the detection boundary, iterating a *boundary extension*
   that up-weights points left above the curve so the boundary ends above all of them;
4. pixels above the boundary are CRs: ``mediancr`` where the median itself is hit (>= 2 frames),
   and a per-frame mask where a frame is hit; ``minimum_max2d_rnoise`` ignores pixels whose
   maximum is within a few read noises of zero; masks can be dilated;
5. combinations: ``mediancr`` (median, CR-hit pixels replaced by the minimum), ``meancrt`` (mean,
   with ``mediancr`` pixels replaced by the ``mediancr`` value) and ``meancr`` (mean of the frames
   with every per-frame CR pixel excluded); optional diagnostic PNGs.

It serves undithered sets, where driz_cr has nothing to gain from drizzling, and cross-checks the
drizzle truth.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CrMaskOptions:
    """Parameters of the multi-frame method (names follow numina's ``crmasks``).

    Attributes
    ----------
    gain
        e-/data unit (1 for electron images).
    read_noise
        Read noise, data units.
    bias
        Bias level still in the data, data units (0 for calibrated images).
    flux_factor
        ``"none"`` (all 1), ``"auto"`` (median ratio of each frame to the median frame over
        well-exposed pixels) or one factor per frame.
    nbins
        Bins of the minimum image in the diagnostic diagram.
    n_simulations
        Simulated realisations of the stack used for the diagram.
    knots
        Interior knots of the boundary spline.
    niter_boundary_extension
        Boundary-extension iterations.
    weight_boundary_extension
        Factor applied each iteration to the weights of points still above the boundary.
    minimum_max2d_rnoise
        Only pixels whose maximum exceeds this many read noises above the bias can be CRs.
    dilation
        Pixels by which masks are grown (0: none, a pixel-level truth like driz_cr's with
        ``driz_cr_grow=1``; numina's ``crmasks`` examples use 1).
    grow_snr
        Grow each frame's mask into neighbouring pixels that exceed the mean of the other frames
        not flagged there by this many standard deviations of that difference (repeated while it
        adds pixels, at most 3 times);
        not in numina, which grows by ``dilation`` only. A CR's faint edge pixels sit below the
        one-expected-pixel boundary but are significant next to a detection, as driz_cr's second
        threshold (``driz_cr_snr``) has it. 0 disables.
    scale_noise_percent
        Noise term proportional to the source signal above the sky (taken from the stack's
        minimum, which CRs do not lift), in percent, added in quadrature (not in numina): calacs'
        ``acsrej`` ``SCALENSE``, 30 % in the ACS/WFC CRREJTAB (29p1548cj_crr_WFC.fits), for frames
        that are not perfectly registered -- CR-SPLIT frames move by a few hundredths of a pixel,
        enough to change a bright star's steep flank by 10-20 % between frames. 0 reproduces the
        plain method.
    seed
        Random seed of the simulations.
    """

    gain: float = 1.0
    read_noise: float = 4.0
    bias: float = 0.0
    flux_factor: Literal["none", "auto"] | tuple[float, ...] = "none"
    nbins: int = 40
    n_simulations: int = 3
    knots: int = 4
    niter_boundary_extension: int = 3
    weight_boundary_extension: float = 10.0
    minimum_max2d_rnoise: float = 5.0
    dilation: int = 0
    grow_snr: float = 0.0
    scale_noise_percent: float = 0.0
    seed: int = 1234


@dataclass(frozen=True, slots=True)
class Boundary:
    """A detection boundary y(x) in a diagnostic diagram and the points it was fitted to.

    Unlike numina, which fits the data-unit points against ``x`` in equal-count bins, the spline
    here is fitted in noise units: the points are divided by the noise model's sigma,
    ``sqrt(read_noise**2 + (x - bias) / gain)``, against ``u = log(sigma(x))``, in equal-count
    bins. Equal-count bins leave a star field's few bright pixels in one wide top bin, whose
    data-unit quantile is dominated by its brightest pixels: the boundary came out far too high
    at the bin's median level and far too low at a star's peak (flagged cores). In noise units
    the points lie near a constant, so the wide bin's quantile holds for all its levels and
    clamping at the ends of the range is safe. (Narrow bins of few pixels are no cure: "one
    expected pixel per bin" then sits at a low quantile and each bin adds a false pixel.)
    """

    x_points: np.ndarray
    y_points: np.ndarray
    x_range: tuple[float, float]
    coefficients: object  # scipy spline of the boundary in sigma units against u = log(sigma)
    noise: tuple[float, float, float] = (0.0, 1.0, 0.0)
    u_range: tuple[float, float] = (-np.inf, np.inf)

    def sigma(self, x: np.ndarray | float) -> np.ndarray:
        """Noise-model standard deviation at level ``x`` (data units)."""
        read_noise, gain, bias = self.noise
        return np.sqrt(read_noise**2 + np.clip(np.asarray(x, dtype=float) - bias, 0.0, None) / gain)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Boundary value at ``x``: the sigma-unit spline (clamped to its range) times sigma(x)."""
        sigma = self.sigma(x)
        u = np.clip(np.log(np.maximum(sigma, 1e-6)), *self.u_range)
        return np.asarray(self.coefficients(u)) * sigma  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class CrMasks:
    """Output of :func:`compute_crmasks` (all arrays (ny, nx)).

    Attributes
    ----------
    frame_masks
        uint8 (N, ny, nx): 1 = CR in that frame.
    mediancr_mask
        uint8: 1 where the median itself is CR-affected.
    mediancr, meancrt, meancr
        float combinations (see module docstring).
    flux_factors
        Factors the frames were divided by.
    boundaries
        ``{"median": Boundary, "frame": Boundary}``.
    """

    frame_masks: np.ndarray
    mediancr_mask: np.ndarray
    mediancr: np.ndarray
    meancrt: np.ndarray
    meancr: np.ndarray
    flux_factors: tuple[float, ...]
    boundaries: dict[str, Boundary] = field(default_factory=dict)


def _flux_factors(stack: np.ndarray, option: Literal["none", "auto"] | tuple[float, ...]) -> np.ndarray:
    n = stack.shape[0]
    if isinstance(option, tuple | list):
        if len(option) != n:
            raise ValueError(f"flux_factor needs {n} values, got {len(option)}")
        return np.asarray(option, dtype=float)
    if option == "none":
        return np.ones(n)
    if option != "auto":
        raise ValueError(f"flux_factor must be 'none', 'auto' or a list of {n} numbers, got {option!r}")
    median = np.median(stack, axis=0)
    level = float(np.median(median))
    # well-exposed pixels only: far above the background, so selection does not bias the ratio
    bright = (median - level) > 20.0 * np.sqrt(np.clip(median, 1.0, None))
    if bright.sum() < 50:
        factors = np.array([np.median(frame) / level for frame in stack])
    else:
        factors = np.array([np.median(frame[bright]) / np.median(median[bright]) for frame in stack])
    return factors / np.median(factors)


def _simulate(
    model: np.ndarray, n_frames: int, options: CrMaskOptions, rng: np.random.Generator
) -> np.ndarray:
    """N noisy realisations of ``model`` (data units) with Poisson + read noise + bias."""
    electrons = np.clip((model - options.bias) * options.gain, 0, None)
    frames = rng.poisson(np.broadcast_to(electrons, (n_frames, *model.shape))).astype(np.float32)
    frames /= options.gain
    frames += rng.normal(0.0, options.read_noise, size=frames.shape).astype(np.float32) + options.bias
    return frames


def fit_boundary(x: np.ndarray, y: np.ndarray, options: CrMaskOptions) -> Boundary:
    """Detection boundary through the one-expected-pixel points of a simulated diagram.

    Parameters
    ----------
    x, y
        Simulated diagram coordinates (min, statistic - min), 1-D, many samples.
    options
        Binning, spline knots and boundary-extension settings.
    """
    from scipy.interpolate import LSQUnivariateSpline

    n_total = x.size
    noise = (options.read_noise, options.gain, options.bias)
    sigma = np.sqrt(options.read_noise**2 + np.clip(x - options.bias, 0.0, None) / options.gain)
    sigma = np.maximum(sigma, 1e-6)
    z, u = y / sigma, np.log(sigma)
    edges = np.unique(np.quantile(u, np.linspace(0, 1, options.nbins + 1)))
    edges[-1] = np.nextafter(edges[-1], np.inf)  # the top sample belongs to the last bin
    xs, us, zs, ws = [], [], [], []
    for lo, hi in itertools.pairwise(edges):
        inside = (u >= lo) & (u < hi)
        count = int(inside.sum())
        if count < 20:
            continue
        # one expected pixel in the bin, scaled to the real image (simulations hold n_simulations copies)
        expected_one = 1.0 / max(count / options.n_simulations, 1.0)
        zs.append(float(np.quantile(z[inside], 1.0 - expected_one)))
        us.append(float(np.median(u[inside])))
        xs.append(float(np.median(x[inside])))
        ws.append(np.sqrt(count))
    xp, up, zp, weights = np.array(xs), np.array(us), np.array(zs), np.array(ws)
    if up.size < options.knots + 4:
        raise ValueError(f"diagnostic diagram too sparse: {up.size} bins from {n_total} pixels")
    knots = np.quantile(up, np.linspace(0, 1, options.knots + 2)[1:-1])
    spline = LSQUnivariateSpline(up, zp, knots, w=weights, k=3)
    for _ in range(options.niter_boundary_extension):
        above = zp > spline(up)
        if not above.any():
            break
        weights = np.where(above, weights * options.weight_boundary_extension, weights)
        spline = LSQUnivariateSpline(up, zp, knots, w=weights, k=3)
    # points in data units, for the diagnostic plots
    return Boundary(
        xp,
        zp * np.exp(up),
        (float(xp.min()), float(xp.max())),
        spline,
        noise,
        (float(up.min()), float(up.max())),
    )


def _scaled_noise(level2d: np.ndarray, opts: CrMaskOptions) -> np.ndarray:
    """``scale_noise_percent`` of the signal above the sky (the median of ``level2d``).

    ``level2d`` must be free of CRs: the stack's minimum, not its median. With three frames a pixel
    hit in two of them lifts the median, and a term proportional to that raised level hid both hits
    (a 236 e- excess over a 77 e- sky went unflagged).
    """
    if opts.scale_noise_percent <= 0:
        return np.zeros_like(level2d)
    signal = np.clip(level2d - float(np.median(level2d)), 0.0, None)
    return (opts.scale_noise_percent / 100.0) * signal


def _grow_masks(masks: np.ndarray, stack: np.ndarray, min2d: np.ndarray, opts: CrMaskOptions) -> np.ndarray:
    """Add to each frame's mask the 8-neighbours significant at ``opts.grow_snr`` over the other frames.

    A neighbour's excess is its value minus the mean of the *other* frames not flagged there (the
    minimum where every other frame is flagged), and its sigma is the noise model at that mean's
    level times ``sqrt(1 + 1/m)`` for a mean of ``m`` frames: the noise of a difference. Against the
    median of the stack, which includes the frame itself, a pixel hit in two of three frames did not
    stand out (the median is the second hit), and a clean pixel was compared with the larger of the
    two others, a biased and noisier reference. Repeated while it adds pixels, at most 3 times.

    Parameters
    ----------
    masks
        bool (N, ny, nx): each frame's detections.
    stack
        float32 (N, ny, nx): the flux-scaled frames, data units.
    min2d
        float32 (ny, nx): the stack's minimum, the CR-free level of the scale-noise term.
    opts
        ``grow_snr``, the noise model and ``scale_noise_percent``.
    """
    from scipy.ndimage import binary_dilation

    structure = np.ones((3, 3), dtype=bool)
    scaled = _scaled_noise(min2d, opts) ** 2
    n = stack.shape[0]
    grown = []
    for i in range(n):
        mask = masks[i]
        if not mask.any():
            grown.append(mask)
            continue
        others = np.arange(n) != i
        clean = ~masks[others]
        count = clean.sum(axis=0)
        total = np.where(clean, stack[others], 0.0).sum(axis=0)
        reference = np.where(count > 0, total / np.maximum(count, 1), min2d)
        variance = opts.read_noise**2 + np.clip(reference - opts.bias, 0, None) / opts.gain
        sigma = np.sqrt(variance * (1.0 + 1.0 / np.maximum(count, 1)) + scaled)
        significant = (stack[i] - reference) > opts.grow_snr * sigma
        for _ in range(3):
            ring = binary_dilation(mask, structure=structure) & ~mask & significant
            if not ring.any():
                break
            mask = mask | ring
        grown.append(mask)
    return np.stack(grown)


def compute_crmasks(frames: Sequence[np.ndarray], options: CrMaskOptions | None = None) -> CrMasks:
    """CR masks and CR-free combinations of a stack of equivalent exposures.

    Parameters
    ----------
    frames
        N >= 3 float arrays (ny, nx) on the same pixel grid, data units.
    options
        Method parameters.

    Returns
    -------
    CrMasks

    Raises
    ------
    ValueError
        Fewer than three frames or frames of different shapes.
    """
    from scipy.ndimage import binary_dilation

    opts = options or CrMaskOptions()
    if len(frames) < 3:
        raise ValueError(f"the multi-frame method needs at least 3 exposures, got {len(frames)}")
    shapes = {np.shape(f) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames differ in shape: {sorted(shapes)}")
    stack = np.stack([np.asarray(f, dtype=np.float32) for f in frames])
    factors = _flux_factors(stack, opts.flux_factor)
    stack = (stack / factors[:, None, None]).astype(np.float32)
    n = stack.shape[0]
    min2d, max2d = stack.min(axis=0), stack.max(axis=0)
    median2d, mean2d = np.median(stack, axis=0), stack.mean(axis=0)

    rng = np.random.default_rng(opts.seed)
    sim_x, sim_med, sim_frame = [], [], []
    step = max(1, int(np.sqrt(median2d.size / 2e5)))
    model = median2d[::step, ::step]
    for _ in range(opts.n_simulations):
        sim = _simulate(model, n, opts, rng)
        smin = sim.min(axis=0)
        sim_x.append(smin.ravel())
        sim_med.append((np.median(sim, axis=0) - smin).ravel())
        sim_frame.append((sim.max(axis=0) - smin).ravel())
    x = np.concatenate(sim_x)
    scale = float(median2d.size) / model.size
    sim_opts = dataclasses.replace(opts, n_simulations=max(1, round(opts.n_simulations / scale)))
    boundary_median = fit_boundary(x, np.concatenate(sim_med), sim_opts)
    boundary_frame = fit_boundary(x, np.concatenate(sim_frame), sim_opts)

    eligible = max2d > opts.bias + opts.minimum_max2d_rnoise * opts.read_noise
    frame_threshold = boundary_frame(min2d)
    median_threshold = boundary_median(min2d)
    if opts.scale_noise_percent > 0:
        sigma = boundary_frame.sigma(min2d)
        inflation = np.sqrt(sigma**2 + _scaled_noise(min2d, opts) ** 2) / sigma
        frame_threshold = frame_threshold * inflation
        median_threshold = median_threshold * inflation
    mediancr_mask = ((median2d - min2d) > median_threshold) & eligible
    frame_masks = ((stack - min2d[None]) > frame_threshold[None]) & eligible[None]
    if opts.grow_snr > 0:
        frame_masks = _grow_masks(frame_masks, stack, min2d, opts)
    if opts.dilation > 0:
        structure = np.ones((2 * opts.dilation + 1,) * 2, dtype=bool)
        mediancr_mask = binary_dilation(mediancr_mask, structure=structure)
        frame_masks = np.stack(
            [binary_dilation(m, structure=structure) if m.any() else m for m in frame_masks]
        )

    mediancr = np.where(mediancr_mask, min2d, median2d)
    meancrt = np.where(mediancr_mask, mediancr, mean2d)
    kept = np.where(frame_masks, np.nan, stack)
    with np.errstate(invalid="ignore"):
        meancr = np.nanmean(kept, axis=0)
    meancr = np.where(np.isfinite(meancr), meancr, mediancr)
    return CrMasks(
        frame_masks=frame_masks.astype(np.uint8),
        mediancr_mask=mediancr_mask.astype(np.uint8),
        mediancr=mediancr,
        meancrt=meancrt,
        meancr=meancr.astype(np.float32),
        flux_factors=tuple(float(f) for f in factors),
        boundaries={"median": boundary_median, "frame": boundary_frame},
    )


def write_diagnostic_plots(
    result: CrMasks, frames: Sequence[np.ndarray], out_dir: Path, *, prefix: str
) -> list[Path]:
    """Diagnostic diagrams (statistic - min vs min, boundary and one-expected points) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stack = (
        np.stack([np.asarray(f, dtype=np.float32) for f in frames])
        / np.asarray(result.flux_factors)[:, None, None]
    )
    min2d = stack.min(axis=0)
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, y in (("median", np.median(stack, axis=0) - min2d), ("frame", stack.max(axis=0) - min2d)):
        boundary = result.boundaries[name]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        sample = slice(None, None, max(1, min2d.size // 200000))
        ax.hexbin(min2d.ravel()[sample], y.ravel()[sample], gridsize=120, bins="log", mincnt=1)
        grid = np.linspace(*boundary.x_range, 200)
        ax.plot(grid, boundary(grid), "r-", label="boundary")
        ax.plot(boundary.x_points, boundary.y_points, "w.", label="one expected pixel")
        ax.set_xlabel("min")
        ax.set_ylabel(f"{name} - min")
        ax.legend(loc="upper left")
        path = out_dir / f"{prefix}_diagram_{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
