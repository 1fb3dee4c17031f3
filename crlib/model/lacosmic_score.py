"""LACosmic as a scored detector: the critical-sigclip pseudo-probability, sweep checks, prediction files.

Each pixel's critical sigclip (:func:`crlib.model.lacosmic.critical_sigclip`) is mapped to a
pseudo-probability by the monotone :func:`sigclip_probability` (``1 / (1 + (8 / s)^3)``), so a
threshold on the score is a sigclip. :func:`predict_exposure_lacosmic` runs the sweep on every chip
of an exposure and writes the pseudo-probability as an ordinary ``<rootname>_crpred.fits``
(``CRMODEL = 'LACosmic'``), so :func:`crlib.metrics.scoring.score_prediction_file` scores LACosmic
exactly like a deepCR model.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import ConfigError
from crlib.model.lacosmic import (
    DEFAULT_SIGCLIP,
    SIGCLIP_SWEEP,
    chip_read_noise,
    critical_sigclip,
    critical_sigclip_and_mask,
)
from crlib.records import PredictionResult

log = logging.getLogger(__name__)


#: ``CRMODEL`` of LACosmic prediction files.
LACOSMIC_MODEL_NAME = "LACosmic"

#: objlim per field type (deepCR-ACS/WFC paper).
OBJLIM_BY_FIELD: dict[str, float] = {"globular_cluster": 2.6, "extragalactic": 2.6, "resolved_galaxy": 4.5}
#: Critical sigclip whose pseudo-probability is 0.5 (:func:`sigclip_probability`).
SIGCLIP_SCALE = 8.0
#: Steepness of :func:`sigclip_probability` (``logit = SIGCLIP_POWER * ln(s / SIGCLIP_SCALE)``).
SIGCLIP_POWER = 3.0


def sigclip_probability(sigclip: np.ndarray | float) -> np.ndarray:
    """Pseudo-probability of a critical sigclip: ``1 / (1 + (S0 / s)^K)``, 0 for ``s <= 0``.

    Monotone, so thresholds on it are thresholds on sigclip; ``logit = K ln(s / S0)`` spreads
    sigclip 2-30 over the score histograms' logit bins (0.01 in logit = 0.33% in sigclip) and the
    float16 ``CRPROB`` (:data:`SIGCLIP_SCALE` maps to 0.5).
    """
    s = np.asarray(sigclip, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        p = 1.0 / (1.0 + (SIGCLIP_SCALE / np.where(s > 0, s, np.nan)) ** SIGCLIP_POWER)
    return np.nan_to_num(p, nan=0.0).astype(np.float32)


def lacosmic_score(
    image: np.ndarray, *, read_noise: float, objlim: float, sigclips: Sequence[float] = SIGCLIP_SWEEP
) -> np.ndarray:
    """Pseudo-probability of one chip: :func:`sigclip_probability` of :func:`critical_sigclip`.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 in [0, 1): 0 = never flagged.
    """
    return sigclip_probability(
        critical_sigclip(image, read_noise=read_noise, objlim=objlim, sigclips=sigclips)
    )


def sweep_threshold(sigclip: float, sigclips: Sequence[float] | None = None) -> float:
    """Score threshold whose mask (``score > threshold``) is LACosmic's at ``sigclip``.

    ``sigclips`` is accepted for compatibility and ignored: the score is in sigclip units for
    every sweep. The threshold sits just below ``sigclip``'s probability, so pixels whose
    critical sigclip equals a swept value count as flagged there.
    """
    del sigclips
    return float(np.nextafter(sigclip_probability(float(sigclip)), np.float32(0.0)))


def refined_sweep(sigclips: Sequence[float]) -> tuple[float, ...]:
    """The sweep with the midpoint of every pair of neighbouring values added (twice as fine)."""
    levels = sorted(set(float(s) for s in sigclips))
    middles = [round((a + b) / 2.0, 6) for a, b in pairwise(levels)]
    return tuple(sorted(set(levels) | set(middles)))


def sweep_tpr_at_fpr(
    chips: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float]],
    *,
    objlim: float,
    sigclips: Sequence[float] = SIGCLIP_SWEEP,
) -> dict[str, float]:
    """LACosmic's pooled TPR at the papers' FPR points for one sweep, scored like a model.

    Parameters
    ----------
    chips
        ``(image, truth mask, valid mask, read noise)`` per chip; the chips' score histograms
        (:func:`crlib.metrics.histograms.score_histograms` of the float16 ``CRPROB``) are summed.
    objlim, sigclips
        As :func:`lacosmic_score`.

    Returns
    -------
    dict
        TPR per FPR point (keys as :data:`crlib.metrics.roc.FPR_POINTS`).
    """
    from crlib.metrics.histograms import score_histograms
    from crlib.metrics.roc import FPR_POINTS, roc_from_histograms, tpr_at_fpr

    hist_cr: np.ndarray | None = None
    hist_noncr: np.ndarray | None = None
    for image, truth, valid, read_noise in chips:
        score = lacosmic_score(image, read_noise=read_noise, objlim=objlim, sigclips=sigclips)
        cr, noncr = score_histograms(score.astype(np.float16), truth, valid)
        hist_cr = cr if hist_cr is None else hist_cr + cr
        hist_noncr = noncr if hist_noncr is None else hist_noncr + noncr
    if hist_cr is None or hist_noncr is None:
        raise ConfigError("no chips to score")
    curve = roc_from_histograms(hist_cr, hist_noncr)
    return {key: float(tpr_at_fpr(curve, fpr)) for key, fpr in FPR_POINTS.items()}


def sweep_refinement_check(
    chips: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float]],
    *,
    objlim: float,
    sigclips: Sequence[float] = SIGCLIP_SWEEP,
) -> dict[str, Any]:
    """Whether the sweep is fine enough: TPR at the FPR points with the sweep and twice as fine.

    Returns
    -------
    dict
        ``sweep`` and ``refined`` (TPR per FPR point, :func:`sweep_tpr_at_fpr`), ``change``
        (refined minus sweep, in TPR points, i.e. per cent), the two sweeps' values and the
        seconds each took.
    """
    refined_levels = refined_sweep(sigclips)
    start = time.perf_counter()
    coarse = sweep_tpr_at_fpr(chips, objlim=objlim, sigclips=sigclips)
    middle = time.perf_counter()
    fine = sweep_tpr_at_fpr(chips, objlim=objlim, sigclips=refined_levels)
    end = time.perf_counter()
    return {
        "sigclips": sorted(set(float(s) for s in sigclips)),
        "refined_sigclips": list(refined_levels),
        "sweep": coarse,
        "refined": fine,
        "change": {key: round(100.0 * (fine[key] - coarse[key]), 3) for key in coarse},
        "seconds": {"sweep": middle - start, "refined": end - middle},
    }


def objlim_for(field_type: str) -> float:
    """The deepCR-ACS/WFC paper's ``objlim`` for a field type.

    Raises
    ------
    ConfigError
        For an unknown field type.
    """
    try:
        return OBJLIM_BY_FIELD[field_type]
    except KeyError:
        raise ConfigError(
            f"unknown field type {field_type!r}; choose one of {', '.join(OBJLIM_BY_FIELD)}"
        ) from None


def _astroscrappy_version() -> str:
    try:
        return version("astroscrappy")
    except PackageNotFoundError:
        return "unknown"


def predict_exposure_lacosmic(
    path: Path,
    *,
    out_dir: Path,
    objlim: float,
    sigclips: Sequence[float] = SIGCLIP_SWEEP,
    operating_sigclip: float = DEFAULT_SIGCLIP,
) -> PredictionResult:
    """LACosmic's sigclip sweep on every chip of an exposure, written as ``<rootname>_crpred.fits``.

    ``CRPROB`` holds the sweep's pseudo-probability (:func:`lacosmic_score`) and ``CRMASK`` LACosmic's
    mask at the sweep value nearest ``operating_sigclip``; the read noise of each chip comes from its
    amplifiers' ``READNSE*`` keywords.

    Parameters
    ----------
    path
        Calibrated exposure (FLC/FLT, electrons).
    out_dir
        Where the prediction file goes.
    objlim
        LACosmic's ``objlim`` (see :func:`objlim_for`).
    sigclips
        The sweep (at least one value; duplicates are dropped).
    operating_sigclip
        sigclip of the binary mask (the nearest sweep value is used).

    Returns
    -------
    PredictionResult
        ``model_name`` ``LACosmic``, ``model_version`` ``astroscrappy-<version>``.

    Raises
    ------
    InputDataError
        Bad input file, or a chip without read-noise keywords.
    ConfigError
        Empty sweep.
    """
    from crlib.formats.flc import read_exposure
    from crlib.formats.prediction import ChipPrediction, prediction_path, write_prediction
    from crlib.provenance import code_version

    levels = sorted(set(float(s) for s in sigclips))
    if not levels:
        raise ConfigError("the LACosmic sigclip sweep needs at least one value")
    operating = min(levels, key=lambda s: abs(s - operating_sigclip))
    threshold = sweep_threshold(operating)
    start = time.perf_counter()
    exposure = read_exposure(path)
    chips = []
    for extver, (sci, _dq) in exposure.chips.items():
        noise = chip_read_noise(exposure.primary, exposure.profile, extver, ccd=exposure.ccd(extver))
        critical, exact = critical_sigclip_and_mask(
            sci, read_noise=noise, objlim=objlim, sigclips=levels, keep=operating
        )
        score = sigclip_probability(critical)
        mask = np.asarray(exact, dtype=np.uint8)
        header = {
            "CCDCHIP": exposure.ccd(extver).ccdchip,
            "NNONFIN": int(np.count_nonzero(~np.isfinite(sci))),
            "NCRPIX": int(mask.sum()),
        }
        chips.append(ChipPrediction(extver=extver, probability=score, mask=mask, header=header))
        log.debug(
            "%s SCI,%d: LACosmic %d CR pixels at sigclip %g", exposure.rootname, extver, mask.sum(), operating
        )
    seconds = time.perf_counter() - start
    model_version = f"astroscrappy-{_astroscrappy_version()}"
    primary = {
        "ROOTNAME": exposure.rootname,
        "INSTRUME": exposure.profile.instrume,
        "DETECTOR": exposure.profile.detector,
        "FILTER": exposure.filter or "",
        "EXPTIME": exposure.exptime_s,
        "CRMODEL": LACOSMIC_MODEL_NAME,
        "CRMODVER": model_version,
        "CRTHRESH": threshold,
        "CROBJLIM": (float(objlim), "LACosmic objlim"),
        "CRSIGCLP": (operating, "LACosmic sigclip of CRMASK"),
        "CRSWEEP": (",".join(f"{s:g}" for s in levels), "sigclip values of the full LACosmic runs"),
        "CRPROBFN": (
            f"1/(1+({SIGCLIP_SCALE:g}/s)^{SIGCLIP_POWER:g})",
            "CRPROB of s, the critical sigclip",
        ),
        "CRLIBVER": code_version(),
        "CRDEVICE": "cpu",
        "CRSECS": round(seconds, 3),
    }
    written = write_prediction(prediction_path(out_dir, exposure.rootname), chips, primary=primary)
    return PredictionResult(
        rootname=exposure.rootname,
        model_name=LACOSMIC_MODEL_NAME,
        model_version=model_version,
        code_version=code_version(),
        threshold=threshold,
        device="cpu",
        seconds=seconds,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        path=str(written),
    )
