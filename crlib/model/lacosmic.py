"""LACosmic (astroscrappy) baseline, run the way the deepCR benchmark runs it.

deepCR's ``evaluate.roc_lacosmic`` calls ``astroscrappy.detect_cosmics`` with ``sigfrac=0.3``,
``sepmed=False``, ``cleantype='medmask'``, ``niter=4``, ``satlevel=inf`` and sweeps ``sigclip``
for its ROC; the deepCR-ACS/WFC paper uses ``objlim=2.6`` for sparse and cluster fields and 4.5
for resolved galaxies. FLC data are already in electrons, so ``gain=1``; the read noise is the
mean of the chip's amplifiers' ``READNSE*`` header values.

To score LACosmic with the same histograms as a probabilistic model, each pixel gets its
*critical sigclip*: the strictest sigclip at which LACosmic still flags it
(:func:`critical_sigclip`), mapped to a pseudo-probability by the monotone
:func:`crlib.model.lacosmic_score.sigclip_probability` (``1 / (1 + (8 / s)^3)``), so a threshold on
the score is a sigclip.
It is computed without giving up exactness where it can be had:

* LACosmic's first iteration depends on sigclip only through thresholds, so its critical sigclip
  is exact at every sigclip (a closed form, :func:`first_pass_sigclip`).
* The later iterations (``niter=4``: each cleans the pixels found so far and looks again) depend on
  what was cleaned, so LACosmic is run in full at every value of the sweep (:data:`SIGCLIP_SWEEP`),
  sharing the first iteration (about a quarter of the cost). A pixel flagged at swept value
  ``g_i`` but not at ``g_{i+1}`` gets a critical sigclip in ``[g_i, g_{i+1})``: the largest at which
  the iterations, in their state at ``g_i``, flag it.

So thresholding the score at a swept value gives LACosmic's mask there (plus the few pixels of
stricter swept values' masks that the looser one lacks: the masks are nested but for about 0.1%
of pixels), and between swept values a continuous estimate instead of a straight line between two
ROC points. The sweep is fine enough when refining it (:func:`sweep_refinement_check`, midpoints
added) moves the TPR at FPR 0.05% / 0.5% by at most a few tenths of a point
(:func:`crlib.model.lacosmic_score.sweep_refinement_check`); see
``docs/inference.md`` (LACosmic baseline) for the measurements. The masks equal
``astroscrappy.detect_cosmics``'s (the tests compare them pixel for pixel): the re-implementation
calls astroscrappy's own filters.

The score, the sweep checks and the prediction files are :mod:`crlib.model.lacosmic_score`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from crlib.errors import ConfigError, InputDataError
from crlib.profiles import ChipLayout, InstrumentProfile

log = logging.getLogger(__name__)


#: sigclip values of the full LACosmic runs behind the ROC, loosest first: every 0.25 where FPR 0.5%
#: falls (sigclip 3-4 on ACS/WFC-like data), then about 12% apart up to 60, because FPR 0.05% falls
#: beyond sigclip 20 in globular clusters. Refining it (midpoints added) moved the pooled TPR at
#: FPR 0.05% / 0.5% by at most 0.17 points per field type on simulated exposures; the 11-value
#: sweep used before (2-20) gave 3.3 points more at 0.05% in a globular cluster, where that FPR
#: lies beyond its last value (``docs/inference.md``, LACosmic baseline).
SIGCLIP_SWEEP: tuple[float, ...] = (
    *(2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0),
    *(10.0, 11.5, 13.0, 15.0, 17.0, 20.0, 23.0, 26.0, 30.0, 34.0, 38.0, 43.0, 50.0, 60.0),
)
#: sigclip of the single operating point (astroscrappy's default).
DEFAULT_SIGCLIP = 4.5
#: Neighbour detection limit as a fraction of sigclip (deepCR's benchmark setting).
SIGFRAC = 0.3


def chip_read_noise(
    primary: Mapping[str, Any], profile: InstrumentProfile, extver: int, *, ccd: ChipLayout | None = None
) -> float:
    """Mean read noise (e-) of the chip's amplifiers from the primary header.

    Parameters
    ----------
    primary
        Primary header (``READNSE*``; ``CCDAMP`` when present limits the amplifiers, e.g. ``A``
        for a subarray read through amplifier A).
    profile
        Instrument profile.
    extver
        SCI EXTVER of the chip.
    ccd
        The chip's CCD as the file says (``CCDCHIP``; see
        :meth:`crlib.formats.flc.ExposureImage.ccd`); default the profile's chip of ``extver``
        (right for full-frame files only: a WFC1 subarray's ``SCI,1`` is WFC1).

    Raises
    ------
    InputDataError
        If none of the chip's ``READNSE*`` keywords is present.
    """
    amps: tuple[str, ...] = (ccd or profile.chip(extver)).amps
    used = str(primary.get("CCDAMP", "") or "").strip().upper()
    if used.isalpha() and set(used) & set(amps):
        amps = tuple(amp for amp in amps if amp in used)
    keys = [key for key in profile.readnoise_keywords if key[-1] in amps]
    values = [float(primary[key]) for key in keys if key in primary and float(primary[key]) > 0]
    if not values:
        raise InputDataError(
            "primary header", f"no read-noise keyword among {keys}", fix="use a calibrated FLC with READNSE*"
        )
    return float(np.mean(values))


def _finite(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C-contiguous float32 copy with non-finite pixels set to the finite median, and their mask."""
    data = np.ascontiguousarray(image, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, np.median(data[~bad]), data).astype(np.float32)
    return data, bad


def lacosmic_mask(
    image: np.ndarray, *, read_noise: float, objlim: float, sigclip: float = DEFAULT_SIGCLIP
) -> np.ndarray:
    """LACosmic CR mask of one chip in electrons with the deepCR benchmark's settings.

    Parameters
    ----------
    image
        ``(ny, nx)`` electrons; non-finite pixels are replaced by the median and never flagged.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` bool, True = CR.
    """
    import astroscrappy

    data, bad = _finite(image)
    mask, _ = astroscrappy.detect_cosmics(
        data,
        inmask=bad,
        sigclip=sigclip,
        sigfrac=SIGFRAC,
        objlim=objlim,
        gain=1.0,
        readnoise=read_noise,
        satlevel=np.inf,
        sepmed=False,
        cleantype="medmask",
        niter=4,
    )
    return np.asarray(mask, dtype=bool) & ~bad


def _max3(values: np.ndarray) -> np.ndarray:
    """Grey-level twin of astroscrappy's ``dilate3``: 3x3 maximum, the 1-pixel border copied."""
    from scipy import ndimage

    out = ndimage.maximum_filter(values, size=3, mode="nearest")
    out[0, :], out[-1, :], out[:, 0], out[:, -1] = values[0, :], values[-1, :], values[:, 0], values[:, -1]
    return out


def _dilate3(flags: np.ndarray) -> np.ndarray:
    from astroscrappy import utils

    return np.asarray(utils.dilate3(np.ascontiguousarray(flags, dtype=np.uint8)), dtype=bool)


def _lower_median(values: np.ndarray) -> np.float32:
    """astroscrappy's ``median``: the lower median (element ``(n - 1) // 2`` in order)."""
    return np.float32(np.partition(values, (values.size - 1) // 2)[(values.size - 1) // 2])


@dataclass
class _Significance:
    """One LACosmic iteration's detection quantities (astroscrappy 1.3, deepCR's settings)."""

    sp: np.ndarray  # Laplacian-to-noise minus its 5x5 median
    fine: np.ndarray  # fine-structure contrast, floored at 0.01
    good: np.ndarray  # not masked (bad pixels grown by 1 px)

    def flagged(self, sigclip: float, *, objlim: float, sigfrac: float) -> np.ndarray:
        """The iteration's CR pixels at ``sigclip``, computed as astroscrappy computes them."""
        sigclip32 = np.float32(sigclip)
        low = np.float32(np.float32(sigfrac) * sigclip32)
        cosmics = (self.sp > sigclip32) & self.good & ((self.sp / self.fine) > objlim)
        cosmics = _dilate3(cosmics) & self.good & (self.sp > sigclip32)
        return _dilate3(cosmics) & self.good & (self.sp > low)

    def critical(self, *, objlim: float, sigfrac: float) -> np.ndarray:
        """Per pixel, the largest sigclip at which this iteration flags it (``-inf``: none).

        Every condition of :meth:`flagged` is a threshold on sigclip, so the pixel is flagged at
        ``s`` exactly when ``s`` is below ``c = min(max3(b), sp / sigfrac)`` with
        ``b = min(max3(a), sp)`` and ``a = sp`` where ``sp / f > objlim`` (``max3``: 3x3 maximum).
        """
        never = np.float32(-np.inf)
        a = np.where(self.good & ((self.sp / self.fine) > objlim), self.sp, never)
        b = np.where(self.good, np.minimum(_max3(a), self.sp), never)
        return np.where(self.good, np.minimum(_max3(b), self.sp / np.float32(sigfrac)), never)


class _LACosmic:
    """astroscrappy's ``detect_cosmics`` re-run on its own filters, sharing the first iteration.

    Settings are deepCR's benchmark ones (``sepmed=False``, ``cleantype='medmask'``,
    ``fsmode='median'``, ``satlevel=inf``, ``gain=1``). The first iteration does not depend on
    sigclip, so it is computed once for every sigclip; each later iteration cleans the pixels
    found so far with the masked 5x5 median (as ``clean_medmask``) and looks again.
    """

    def __init__(self, image: np.ndarray, *, read_noise: float, objlim: float, sigfrac: float = SIGFRAC):
        from astroscrappy.astroscrappy import update_mask

        self.data, bad = _finite(image)
        self.objlim, self.sigfrac = float(objlim), float(sigfrac)
        self.var = self.data + np.float32(read_noise * read_noise)
        mask = np.ascontiguousarray(bad, dtype=np.uint8)
        update_mask(self.data, mask, np.inf, False)  # satlevel=inf: grows the bad pixels by 1 px
        self.mask = mask.astype(bool)
        self.background = _lower_median(self.data[~self.mask])
        self.background_var = _lower_median(self.var[~self.mask])
        self.first = self._significance(self.data, self.var)

    def _significance(self, data: np.ndarray, var: np.ndarray) -> _Significance:
        from astroscrappy import utils

        conved = utils.laplaceconvolve(utils.subsample(data))
        conved[conved < 0] = 0.0
        laplace = utils.rebin(conved)
        del conved
        m5 = utils.medfilt5(var)
        m5[m5 < 0.00001] = 0.00001
        noise = np.sqrt(m5)
        del m5
        laplace /= 2.0 * noise
        sp = laplace - utils.medfilt5(laplace)
        del laplace
        fine = utils.medfilt3(data)
        fine = (fine - utils.medfilt7(fine)) / noise
        fine[fine < 0.01] = 0.01
        return _Significance(sp=sp, fine=fine, good=~self.mask)

    def _cleaned(self, crmask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image and variance with the ``crmask`` pixels replaced as ``clean_medmask`` does."""
        ny, nx = self.data.shape
        inner = np.zeros_like(crmask)
        inner[2 : ny - 2, 2 : nx - 2] = crmask[2 : ny - 2, 2 : nx - 2]
        index = np.flatnonzero(inner)
        data, var = self.data.copy(), self.var.copy()
        if index.size == 0:
            return data, var
        dy, dx = np.mgrid[-2:3, -2:3]
        offsets = (dy * nx + dx).ravel()
        excluded = (crmask | self.mask).ravel()
        for array, background in ((data, self.background), (var, self.background_var)):
            flat = array.ravel()
            for chunk in np.array_split(index, max(1, index.size // 65536)):
                around = chunk[:, None] + offsets[None, :]
                values = flat[around]
                dropped = excluded[around]
                values[dropped] = np.inf
                values.sort(axis=1)
                count = 25 - dropped.sum(axis=1)
                med = values[np.arange(chunk.size), np.maximum(count - 1, 0) // 2]
                flat[chunk] = np.where(count > 0, med, background)
        return data, var

    def run(self, sigclip: float, *, niter: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """LACosmic's mask at ``sigclip`` and, per pixel, the largest critical sigclip of its iterations.

        The critical values of iteration ``k > 1`` are those of that iteration's state at
        ``sigclip`` (which pixels had been cleaned): exact for the mask at ``sigclip``, and the
        first-order estimate of the mask at a nearby stricter sigclip.
        """
        crmask = np.zeros(self.data.shape, dtype=bool)
        critical = np.full(self.data.shape, -np.inf, dtype=np.float32)
        significance = self.first
        for k in range(niter):
            if k > 0:
                significance = self._significance(*self._cleaned(crmask))
            cosmics = significance.flagged(sigclip, objlim=self.objlim, sigfrac=self.sigfrac)
            if k > 0:  # the first iteration's critical values are :meth:`first_critical`
                np.maximum(
                    critical, significance.critical(objlim=self.objlim, sigfrac=self.sigfrac), out=critical
                )
            crmask |= cosmics
            if not cosmics.any():
                break
        return crmask, critical


def first_pass_sigclip(
    image: np.ndarray, *, read_noise: float, objlim: float, sigfrac: float = SIGFRAC
) -> np.ndarray:
    """Per pixel, the largest sigclip at which LACosmic's first iteration flags it.

    ``first_pass_sigclip(...) > s`` equals ``astroscrappy.detect_cosmics(..., sigclip=s,
    niter=1)``'s mask (deepCR's settings) at every ``s``: the first iteration does not depend on
    sigclip except through thresholds (see ``_Significance.critical``).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32; ``-inf`` where no sigclip flags the pixel.
    """
    lacosmic = _LACosmic(image, read_noise=read_noise, objlim=objlim, sigfrac=sigfrac)
    return lacosmic.first.critical(objlim=lacosmic.objlim, sigfrac=lacosmic.sigfrac).astype(np.float32)


def critical_sigclip(
    image: np.ndarray,
    *,
    read_noise: float,
    objlim: float,
    sigclips: Sequence[float] = SIGCLIP_SWEEP,
    nesting: Literal["closest", "union"] = "closest",
) -> np.ndarray:
    """Per pixel, the strictest sigclip at which LACosmic (4 iterations) still flags it.

    LACosmic is run at every ``sigclips`` value (sharing the first iteration, which does not
    depend on sigclip). A pixel whose last swept value is ``g_i`` gets its critical sigclip
    within ``[g_i, g_{i+1})``: the largest sigclip at which the iterations, in their state at
    ``g_i``, flag it (the first iteration's part is exact; the later iterations' part is estimated
    from the state at ``g_i``). Below the loosest value, pixels get the first iteration's exact
    critical sigclip.

    LACosmic's masks are not quite nested (about 1% of the pixels flagged at some sigclip are
    flagged at one value, not at a looser one, and again at a stricter one: mostly false
    positives around bright stars), so no single number per pixel reproduces every mask.
    ``nesting`` says which swept value is the pixel's last:

    * ``closest`` (default): the ``g_k`` whose threshold ``critical >= g_i`` disagrees with the
      pixel's actual flags at the fewest swept values (flags ``f_i``: ``k`` maximises
      ``sum_{i <= k} (2 f_i - 1)``, the first such ``k``). Thresholded at swept values it gives
      LACosmic's masks up to these flickering pixels, which err both ways and do not accumulate
      as the sweep gets finer.
    * ``union``: the strictest swept value that flags the pixel, so ``critical >= g_i`` is the
      union of the masks at ``g_i`` and stricter values: every flickering pixel is added to every
      looser mask, more of them the finer the sweep (about +10% false positives at 0.05% FPR
      with a sweep every 0.25 in sigclip).

    Parameters
    ----------
    image
        ``(ny, nx)`` electrons; non-finite pixels are never flagged.
    read_noise, objlim
        As :func:`lacosmic_mask`.
    sigclips
        The swept values (at least one).
    nesting
        ``closest`` or ``union`` (above).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 sigclip; 0 where LACosmic never flags the pixel.
    """
    critical, _ = critical_sigclip_and_mask(
        image, read_noise=read_noise, objlim=objlim, sigclips=sigclips, nesting=nesting
    )
    return critical


def critical_sigclip_and_mask(
    image: np.ndarray,
    *,
    read_noise: float,
    objlim: float,
    sigclips: Sequence[float],
    nesting: Literal["closest", "union"] = "closest",
    keep: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`critical_sigclip`, and LACosmic's own mask at the swept value ``keep`` (if given).

    Returns
    -------
    critical, mask
        float32 ``(ny, nx)`` critical sigclip; bool ``(ny, nx)`` mask at ``keep`` (``None`` without it).
    """
    levels = sorted(set(float(s) for s in sigclips))
    if not levels:
        raise ConfigError("the LACosmic sigclip sweep needs at least one value")
    if nesting not in ("closest", "union"):
        raise ConfigError(f"nesting must be closest or union, not {nesting!r}")
    kept: np.ndarray | None = None
    lacosmic = _LACosmic(image, read_noise=read_noise, objlim=objlim)
    first = lacosmic.first.critical(objlim=lacosmic.objlim, sigfrac=lacosmic.sigfrac)
    below = np.nextafter(np.float32(levels[0]), np.float32(0))
    result = np.where(first > 0, np.minimum(first, below), np.float32(0)).astype(np.float32)
    running = np.zeros(first.shape, dtype=np.int16)  # sum of (2 f_i - 1) so far
    best = np.zeros(first.shape, dtype=np.int16)  # its maximum (0: never flagged)
    for index, level in enumerate(levels):
        mask, later = lacosmic.run(level)
        if keep is not None and level == keep:
            kept = mask
        top = np.float32(levels[index + 1]) if index + 1 < len(levels) else np.float32(np.inf)
        ceiling = np.nextafter(top, np.float32(0))
        value = np.clip(np.maximum(first, later), np.float32(level), ceiling)
        if nesting == "union":
            chosen = mask
        else:
            running += np.where(mask, np.int16(1), np.int16(-1))
            chosen = running > best
            np.maximum(best, running, out=best)
        result[chosen] = value[chosen]
    return result, kept
