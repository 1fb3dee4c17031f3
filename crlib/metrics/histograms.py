"""Score histograms on fixed bins, so that a pooled ROC over any set of exposures is a sum.

Probabilities are binned as the float16 values the prediction file stores them as. The bin
thresholds :data:`SCORE_THRESHOLDS` are float16 values spaced 0.01 apart in logit
(probability 1.1e-7 to 1 - 4.9e-4, the largest float16 below 1), deduplicated, plus exactly 0.5:

* bin 0 holds ``p <= SCORE_THRESHOLDS[0]``;
* bin ``k`` holds ``SCORE_THRESHOLDS[k-1] < p <= SCORE_THRESHOLDS[k]``;
* the last bin holds ``p > SCORE_THRESHOLDS[-1]``.

So "pixels with ``p > SCORE_THRESHOLDS[k]``" is exactly ``hist[k + 1:].sum()``: the ROC at every
threshold follows from the two histograms without the pixels. At an ACS/WFC exposure's 1.6e7
pixels an FPR of 1e-5 is 160 pixels; the bins are narrow enough (0.01 in logit, and one bin per
float16 value near 1) that the interpolated TPR there moves by less than the float16 rounding.

Histograms are computed in one pass: the float16 bit pattern of each probability (15,361 codes in
[0, 1]) plus an offset for the pixel's class is counted with :func:`numpy.bincount`, and a lookup
table maps codes to bins.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from crlib.float16 import float16_bits

#: Version of the binning; stored with histograms so old rows are never mixed with new bins.
BINNING_VERSION = "f16-logit0.01-v1"

_ONE_F16_CODE = int(np.array(1.0, dtype=np.float16).view(np.uint16))  # 0x3C00 = 15360
_N_CODES = _ONE_F16_CODE + 1


def _make_thresholds() -> np.ndarray:
    logits = np.linspace(-16.0, 7.7, 2371)
    probs = (1.0 / (1.0 + np.exp(-logits))).astype(np.float16)
    probs = probs[(probs > 0) & (probs < 1)]
    values = np.union1d(probs.astype(np.float64), [0.5])
    return values


#: Bin thresholds (float64 values of float16 numbers), ascending.
SCORE_THRESHOLDS: np.ndarray = _make_thresholds()
SCORE_THRESHOLDS.setflags(write=False)
#: Number of bins (``len(SCORE_THRESHOLDS) + 1``).
N_SCORE_BINS: int = int(SCORE_THRESHOLDS.size + 1)


@lru_cache(maxsize=1)
def _code_to_bin() -> np.ndarray:
    codes = np.arange(_N_CODES, dtype=np.uint16)
    values = codes.view(np.float16).astype(np.float64)
    return np.searchsorted(SCORE_THRESHOLDS, values, side="left").astype(np.intp)


def float16_codes(probability: np.ndarray) -> np.ndarray:
    """Bit patterns of the probabilities rounded to float16, clipped to [0, 1] (codes 0..15360).

    Parameters
    ----------
    probability
        Any float array of probabilities (NaN counts as 0).
    """
    values = np.nan_to_num(np.asarray(probability), nan=0.0)
    return float16_bits(np.clip(values, 0.0, 1.0))


def score_histograms(
    probability: np.ndarray, truth: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of CR and non-CR valid pixels per score bin.

    Parameters
    ----------
    probability
        ``(ny, nx)`` CR probability.
    truth
        ``(ny, nx)`` truth mask, nonzero = CR.
    valid
        ``(ny, nx)`` valid-pixel mask, nonzero = usable.

    Returns
    -------
    hist_cr, hist_noncr
        int64 arrays of length :data:`N_SCORE_BINS`.
    """
    if not (probability.shape == truth.shape == valid.shape):
        raise ValueError(
            f"shape mismatch: prob {probability.shape}, truth {truth.shape}, valid {valid.shape}"
        )
    codes = float16_codes(probability).astype(np.int32)
    klass = np.asarray(valid, dtype=bool).astype(np.int32) * (
        1 + np.asarray(truth, dtype=bool).astype(np.int32)
    )
    counts = np.bincount((codes + _N_CODES * klass).ravel(), minlength=3 * _N_CODES)
    lut = _code_to_bin()
    hist_noncr = np.bincount(lut, weights=counts[_N_CODES : 2 * _N_CODES], minlength=N_SCORE_BINS)
    hist_cr = np.bincount(lut, weights=counts[2 * _N_CODES :], minlength=N_SCORE_BINS)
    return hist_cr.astype(np.int64), hist_noncr.astype(np.int64)


def dilated_probability(probability: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probability whose threshold equals the dilated thresholded mask, deepCR's way.

    deepCR's ``evaluate.roc`` zeroes ignored pixels of the binary mask, then dilates it with
    ``skimage.morphology.disk(1)`` (a 3x3 cross). Dilation commutes with thresholding, so the same
    masks come from thresholding the maximum of the (ignored-zeroed) probability over that cross.
    """
    from scipy.ndimage import maximum_filter

    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    zeroed = np.where(np.asarray(valid, dtype=bool), probability, 0).astype(np.float32, copy=False)
    return maximum_filter(zeroed, footprint=cross, mode="nearest")
