"""IEEE float16 bit patterns of float32 arrays, fast where numpy's conversion is slow.

numpy converts float32 to float16 ~25x slower when the values underflow to float16 subnormals or
zero (probabilities of 1e-6 and below, most pixels of a CR probability map): 0.55-0.6 s per
2048x4096 chip against 0.02 s for values in [0.01, 1]. torch's conversion (F16C instructions)
gives the same bit patterns for every non-NaN float32 (round to nearest even, subnormals, infinities;
checked on a 4.3 million pattern sample of all 2^32) in ~0.01 s. It is used when torch is already
imported (the inference path); NaNs keep numpy's patterns (torch quiets their payload). Light on
purpose: this module never imports torch itself.
"""

from __future__ import annotations

import sys

import numpy as np


def float16_bits(values: np.ndarray) -> np.ndarray:
    """The float16 bit patterns of ``values`` exactly as ``values.astype(np.float16)`` gives them.

    Parameters
    ----------
    values
        Any-shape float array.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``uint16`` array of the same shape.
    """
    array = np.asarray(values)
    torch = sys.modules.get("torch")
    if torch is None or array.dtype != np.float32 or array.size == 0:
        with np.errstate(under="ignore", over="ignore"):
            return np.ascontiguousarray(array.astype(np.float16)).view(np.uint16)
    contiguous = np.ascontiguousarray(array)
    if not contiguous.flags.writeable:  # torch.from_numpy warns on read-only memory (a memmap)
        contiguous = contiguous.copy()
    bits = torch.from_numpy(contiguous).to(torch.float16).numpy().view(np.uint16)
    nan = np.isnan(contiguous)
    if nan.any():
        bits[nan] = contiguous[nan].astype(np.float16).view(np.uint16)
    return bits
