"""ACS/WFC and WFC3/UVIS data-quality (DQ) conventions: which flags are CR labels, which drizzle uses.

The bits are those of the calibrated FLC/FLT ``DQ`` extensions (ACS Data Handbook, table 2.x):
4096 is set by AstroDrizzle's driz_cr and 8192 by calacs' CR-SPLIT rejection; 16 (hot), 64 (warm)
and 256 (full well) are what drizzlepac's single-visit parameters treat as good.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CR_DQ_BITS", "DRIZZLE_GOOD_BITS", "IGNORED_DQ_BITS", "dq_good"]

#: CR flags: 4096 (AstroDrizzle) and 8192 (calacs CR-SPLIT rejection); they never invalidate a pixel.
CR_DQ_BITS = 4096 | 8192

#: DQ bits drizzle treats as good: drizzlepac SVM's ``driz_sep_bits``/``final_bits`` (336 = 16 + 64 + 256).
DRIZZLE_GOOD_BITS = 336

#: DQ bits ignored when deciding whether a pixel *covers* another exposure (what drizzle uses).
IGNORED_DQ_BITS = DRIZZLE_GOOD_BITS | CR_DQ_BITS


def dq_good(dq: np.ndarray, *, ignored_bits: int = IGNORED_DQ_BITS) -> np.ndarray:
    """bool array: True where no DQ bit outside ``ignored_bits`` is set."""
    return (np.asarray(dq).astype(np.int64) & ~ignored_bits) == 0
