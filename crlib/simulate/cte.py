"""Charge-transfer (CTE) trails along the parallel read-out direction of ACS/WFC.

Radiation damage creates charge traps; during the parallel read-out a charge packet loses electrons
to them at every transfer and the traps release them a few transfers later, so every source gets a
trail on its side away from the serial register (toward the inter-chip gap). The facts this model
follows (sources in ``docs/simulator.md``):

* the loss grows linearly with time since ACS was installed (ACS ISR 2003-09, 2009-01),
* with the number of parallel transfers, i.e. the distance to the serial register,
* sub-linearly with the charge of the packet (faint sources lose a larger fraction),
* and a higher background fills traps, so trails shrink with the sky level (ACS ISR 2025-02,
  instrument handbook §2.6: keep backgrounds above 20-30 e-);
* FLC files are corrected by the pipeline's pixel-based algorithm with ~75 % reconstruction
  accuracy at typical backgrounds (handbook §2.6): we add the residual trails only.

Model per pixel with charge ``q`` over a background ``b`` after ``n`` transfers at ``t`` years
since installation: ``lost = rho * t * n / 2048 * (sqrt(max(q, b)) - sqrt(b))``, capped at
``MAX_LOST_FRACTION`` of ``q - b``; the lost charge reappears in the following pixels with an
exponential release profile of scale ``RELEASE_SCALE_PX``. Then ``RESIDUAL_FRACTION`` of the
whole effect (loss and trail) is kept: what the FLC still shows.
"""

from __future__ import annotations

import numpy as np

from crlib.simulate.geometry import FloatArray

#: MJD of ACS installation (SM3B, 2002 March 7).
ACS_INSTALL_MJD = 52340.0
#: Raw trap density per year since installation, e-^(1/2) per 2048 transfers; 7.5 after 21
#: years makes a 1000 e- CR over a 30 e- sky lose ~20 % at the far end of a chip before
#: correction, the order of the losses ACS ISR 2009-01 extrapolates to the 2020s.
TRAP_DENSITY_PER_YEAR = 0.36
#: Largest fraction of the charge above the background a packet can lose.
MAX_LOST_FRACTION = 0.9
#: e-folding length (pixels) and extent of the release profile.
RELEASE_SCALE_PX = 3.0
RELEASE_EXTENT_PX = 20
#: Share of the trails left in FLC files by the pixel-based correction (~75 % accurate).
RESIDUAL_FRACTION = 0.25


def years_since_install(mjd: float) -> float:
    """Years between ACS installation and ``mjd`` (0 before it)."""
    return max(0.0, (mjd - ACS_INSTALL_MJD) / 365.25)


def release_kernel(scale_px: float = RELEASE_SCALE_PX, extent_px: int = RELEASE_EXTENT_PX) -> FloatArray:
    """Normalised release profile over trail pixels 1..``extent_px`` behind the packet."""
    steps = np.arange(1, extent_px + 1, dtype=float)
    kernel = np.exp(-(steps - 1.0) / scale_px)
    return kernel / kernel.sum()


def apply_cte(
    charge: FloatArray,
    *,
    transfers: FloatArray,
    trail_sign: int,
    background_e: float,
    years: float,
    residual_fraction: float = RESIDUAL_FRACTION,
) -> tuple[FloatArray, FloatArray]:
    """Trail the charge of one chip window along its columns.

    Parameters
    ----------
    charge
        Electrons per pixel before read-out, shape (ny, nx) (not modified).
    transfers
        Parallel transfers of each row to the serial register, shape (ny,).
    trail_sign
        +1 when trails extend toward larger row numbers (register below the window), -1 otherwise.
    background_e
        Sky + dark electrons per pixel (fills traps).
    years
        Years since ACS installation.
    residual_fraction
        Share of the raw effect that remains (the FLC's residual after pixel-based correction).

    Returns
    -------
    tuple
        ``(trailed charge, trail)``: the charge after read-out and the released charge alone
        (electrons, both (ny, nx)).
    """
    from scipy.ndimage import correlate1d

    if years <= 0 or residual_fraction <= 0:
        return charge.copy(), np.zeros_like(charge)
    b = max(background_e, 0.0)
    scale = residual_fraction * TRAP_DENSITY_PER_YEAR * years * (np.asarray(transfers, dtype=float) / 2048.0)
    excess = np.clip(charge - b, 0.0, None)
    lost = scale[:, None] * (np.sqrt(b + excess) - np.sqrt(b))
    lost = np.minimum(lost, MAX_LOST_FRACTION * excess)
    kernel = release_kernel()
    # released[y] = sum_k kernel[k-1] * lost[y - sign * k]: a correlation with the kernel placed on
    # the side of the packet the trail points away from
    full = np.zeros(2 * RELEASE_EXTENT_PX + 1)
    if trail_sign > 0:
        full[:RELEASE_EXTENT_PX] = kernel[::-1]
    else:
        full[RELEASE_EXTENT_PX + 1 :] = kernel
    trail = correlate1d(lost, full, axis=0, mode="constant")
    return charge - lost + trail, trail


def chip_transfers(window_y0: int, ny: int, *, register_at_top: bool, chip_rows: int = 2048) -> FloatArray:
    """Parallel transfers of each window row (full-chip row ``window_y0 + i``) to its serial register.

    ACS/WFC reads WFC1 (``SCI,2``) out at its top rows and WFC2 (``SCI,1``) at its bottom rows:
    both registers are on the far side from the inter-chip gap.
    """
    rows = np.arange(window_y0, window_y0 + ny, dtype=float)
    return (chip_rows - rows) if register_at_top else rows + 1.0
