"""drizzlepac's driz_cr test (AstroDrizzle step 6) on arrays, with the same result and fewer passes.

:func:`driz_cr_good_mask` computes, for one chip, exactly what ``drizzlepac.drizCR._driz_cr``
writes to ``<root>_sci<N>_crmask.fits`` (``True`` = good, ``False`` = cosmic ray), from the
exposure and its blotted median:

* ``deriv = drizzlepac.quickDeriv.qderiv(blot)``: for each pixel the largest absolute
  difference to its four neighbours (drizzlepac's own function, edge rules included);
* ``noise = sqrt(gain * |blot + background| + read_noise**2)`` (electrons);
* ``good1 = |sci - blot| <= scale1 * deriv + snr1 * noise / gain``;
* ``good2 = |sci - blot| <= scale2 * deriv + snr2 * noise / gain``;
* a pixel is good when ``good2`` holds or ``good1`` holds at every pixel of its 3x3
  neighbourhood (edges mirrored, as ``scipy.signal.convolve2d(boundary='symm')``);
* ``grow`` and ``ctegrow`` as drizzlepac (``grow=1``, ``ctegrow=0``, the single-visit values,
  change nothing; other values go through the same ``convolve2d`` calls as drizzlepac).

drizzlepac tests the 3x3 neighbourhood with a ``convolve2d`` of a boolean image; here it is a
minimum filter, which gives the same mask (a count of 9 ones in a 3x3 window is a window whose
minimum is 1) in a fraction of the time. ``tests/truth/test_driz_cr.py`` checks the
result pixel for pixel against drizzlepac's own functions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _parse_pair(text: str | tuple[float, float]) -> tuple[float, float]:
    if isinstance(text, tuple):
        return float(text[0]), float(text[1])
    values = [float(v) for v in str(text).replace(",", " ").replace(";", " ").split()]
    if len(values) != 2:
        raise ValueError(f"expected two numbers, got {text!r}")
    return values[0], values[1]


def driz_cr_good_mask(
    sci: np.ndarray,
    blot: np.ndarray,
    *,
    gain: float,
    read_noise_e: float,
    background_e: float,
    snr: str | tuple[float, float] = "3.5 3.0",
    scale: str | tuple[float, float] = "1.5 1.2",
    grow: int = 1,
    ctegrow: int = 0,
    cte_dir: int = 0,
) -> np.ndarray:
    """driz_cr's per-chip mask, ``True`` = good, ``False`` = cosmic ray.

    Parameters
    ----------
    sci
        float (ny, nx) exposure as read from the file, electrons (sky not subtracted).
    blot
        float (ny, nx) blotted median with the sky added back (``blot_addsky``), electrons.
    gain
        Effective gain, e-/ADU (drizzlepac's ``_effGain``).
    read_noise_e
        Read noise, electrons (``_rdnoise``).
    background_e
        Sky drizzlepac subtracted from this chip, electrons (``subtractedSky``).
    snr, scale
        ``driz_cr_snr`` and ``driz_cr_scale``: two numbers each, as text or a pair.
    grow, ctegrow, cte_dir
        ``driz_cr_grow``, ``driz_cr_ctegrow`` and the chip's readout direction (+1, -1 or 0).

    Returns
    -------
    numpy.ndarray
        bool (ny, nx).
    """
    snr1, snr2 = _parse_pair(snr)
    mult1, mult2 = _parse_pair(scale)
    sci32 = np.asarray(sci, dtype=np.float32)
    blot32 = np.asarray(blot, dtype=np.float32)
    if sci32.shape != blot32.shape:
        raise ValueError(f"exposure {sci32.shape} and blotted median {blot32.shape} differ in shape")
    from drizzlepac import quickDeriv  # drizzlepac is slow to import; only a run needs it

    deriv = quickDeriv.qderiv(blot32)
    # the same operations in the same order as drizzlepac, so that every rounding is the same
    # (the scalars keep their types: a numpy float64 background promotes the noise to float64)
    residual = np.absolute(sci32 - blot32)
    noise = np.sqrt(gain * np.abs(blot32 + background_e) + read_noise_e**2)
    good_loose = residual <= (mult1 * deriv + snr1 * noise / gain)
    good = residual <= (mult2 * deriv + snr2 * noise / gain)
    del residual, deriv, noise
    good |= ndimage.minimum_filter(good_loose.view(np.uint8), size=3, mode="reflect").view(bool)
    if grow == 1 and ctegrow <= 0:
        return np.asarray(good, dtype=bool)
    from scipy import signal

    # both convolutions of the mask before either is applied, then combined, as drizzlepac does
    grown = signal.convolve2d(good, np.ones((grow, grow), dtype=np.uint16), boundary="symm", mode="same")
    kernel = np.zeros((2 * ctegrow + 1, 2 * ctegrow + 1))
    if cte_dir == 1:
        kernel[0:ctegrow, ctegrow] = 1
    elif cte_dir == -1:
        kernel[ctegrow + 1 : 2 * ctegrow + 1, ctegrow] = 1
    tail = signal.convolve2d(good, kernel, boundary="symm", mode="same")
    good = (grown >= grow**2) & (tail >= ctegrow)
    return np.asarray(good, dtype=bool)
