"""driz_cr on arrays against drizzlepac's own functions, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
from drizzlepac import quickDeriv
from scipy import signal

from crlib.truth.driz_cr import driz_cr_good_mask


def _drizzlepacs_formula(sci, blot, gain, rn, backg, snr, scale, grow, ctegrow, cte_dir):
    """drizzlepac.drizCR._driz_cr's computation part, as written there (drizzlepac 3.11)."""
    snr1, snr2 = snr
    mult1, mult2 = scale
    blot_deriv = quickDeriv.qderiv(blot)
    t1 = np.absolute(sci - blot)
    ta = np.sqrt(gain * np.abs(blot + backg) + rn**2)
    t2 = mult1 * blot_deriv + snr1 * ta / gain
    tmp1 = t1 <= t2
    tmp2 = signal.convolve2d(tmp1, np.ones((3, 3), dtype=np.uint16), boundary="symm", mode="same")
    t2 = mult2 * blot_deriv + snr2 * ta / gain
    cr_mask = (t1 <= t2) | (tmp2 >= 9)
    grow_kernel = np.ones((grow, grow), dtype=np.uint16)
    grow_conv = signal.convolve2d(cr_mask, grow_kernel, boundary="symm", mode="same")
    kernel = np.zeros((2 * ctegrow + 1, 2 * ctegrow + 1))
    if cte_dir == 1:
        kernel[0:ctegrow, ctegrow] = 1
    elif cte_dir == -1:
        kernel[ctegrow + 1 : 2 * ctegrow + 1, ctegrow] = 1
    cte_conv = signal.convolve2d(cr_mask, kernel, boundary="symm", mode="same")
    return (grow_conv >= grow**2) & (cte_conv >= ctegrow)


@pytest.mark.parametrize(
    ("grow", "ctegrow", "cte_dir", "background"),
    [(1, 0, 1, 12.5), (1, 0, -1, np.float64(40.25)), (3, 2, 1, 7.0), (2, 3, -1, 0.0), (1, 4, 0, 3.0)],
)
def test_mask_is_drizzlepacs_on_a_chip_with_cosmic_rays(grow, ctegrow, cte_dir, background):
    rng = np.random.default_rng(7)
    shape = (96, 80)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    model = (30.0 + 800.0 * np.exp(-((yy - 40) ** 2 + (xx - 30) ** 2) / 8.0)).astype(np.float32)
    sci = (model + rng.normal(0.0, np.sqrt(model + 25.0))).astype(np.float32)
    hits = rng.integers(0, sci.size, 60)
    sci.flat[hits] += rng.uniform(50, 3000, hits.size).astype(np.float32)
    expected = _drizzlepacs_formula(
        sci, model, 1.0, 5.0, background, (3.5, 3.0), (1.5, 1.2), grow, ctegrow, cte_dir
    )
    found = driz_cr_good_mask(
        sci,
        model,
        gain=1.0,
        read_noise_e=5.0,
        background_e=background,
        snr="3.5 3.0",
        scale="1.5,1.2",
        grow=grow,
        ctegrow=ctegrow,
        cte_dir=cte_dir,
    )
    assert (~expected).sum() >= 60  # the test has cosmic rays to find
    assert np.array_equal(found, expected)


def test_mismatched_shapes_and_bad_thresholds_are_refused():
    image = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        driz_cr_good_mask(image, image[:4], gain=1.0, read_noise_e=5.0, background_e=0.0)
    with pytest.raises(ValueError, match="two numbers"):
        driz_cr_good_mask(image, image, gain=1.0, read_noise_e=5.0, background_e=0.0, snr="3.5")
