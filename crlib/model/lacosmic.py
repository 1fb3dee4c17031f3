"""LACosmic (astroscrappy) baseline, run the way the deepCR benchmark runs it.

deepCR's ``evaluate.roc_lacosmic`` calls ``astroscrappy.detect_cosmics`` with ``sigfrac=0.3``,
``sepmed=False``, ``cleantype='medmask'``, ``niter=4``, ``satlevel=inf`` and sweeps ``sigclip``
for its ROC; the deepCR-ACS/WFC paper uses ``objlim=2.6`` for sparse and cluster fields and 4.5
for resolved galaxies. FLC data are already in electrons, so ``gain=1``; the read noise is the
mean of the chip's amplifiers' ``READNSE*`` header values.

To score LACosmic with the same histograms as a probabilistic model, a sigclip sweep becomes a
pseudo-probability: the pixel's score is the level of the strictest sigclip that still flags it
(:data:`SIGCLIP_SWEEP` strictest last; the score of level ``i`` of ``n`` is ``(i + 1) / (n + 1)``).
Thresholding the score between two levels gives the union of the masks at or above that
strictness, which is LACosmic's mask at that sigclip whenever the sweep's masks are nested.

:func:`predict_exposure_lacosmic` runs the sweep on every chip of an exposure and writes the
pseudo-probability as an ordinary ``<rootname>_crpred.fits`` (``CRMODEL = 'LACosmic'``), so
:func:`crlib.metrics.scoring.score_prediction_file` scores LACosmic exactly like a deepCR model.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import ConfigError, InputDataError
from crlib.profiles import ChipLayout, InstrumentProfile
from crlib.records import PredictionResult

log = logging.getLogger(__name__)

#: ``CRMODEL`` of LACosmic prediction files.
LACOSMIC_MODEL_NAME = "LACosmic"

#: objlim per field type (deepCR-ACS/WFC paper).
OBJLIM_BY_FIELD: dict[str, float] = {"globular_cluster": 2.6, "extragalactic": 2.6, "resolved_galaxy": 4.5}
#: sigclip values swept for the ROC, loosest first.
SIGCLIP_SWEEP: tuple[float, ...] = (2.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0, 10.0, 14.0, 20.0)
#: sigclip of the single operating point (astroscrappy's default).
DEFAULT_SIGCLIP = 4.5


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
        :meth:`crlib.model.exposure.ExposureImage.ccd`); default the profile's chip of ``extver``
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

    data = np.asarray(image, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, np.median(data[~bad]), data).astype(np.float32)
    mask, _ = astroscrappy.detect_cosmics(
        data,
        inmask=bad,
        sigclip=sigclip,
        sigfrac=0.3,
        objlim=objlim,
        gain=1.0,
        readnoise=read_noise,
        satlevel=np.inf,
        sepmed=False,
        cleantype="medmask",
        niter=4,
    )
    return np.asarray(mask, dtype=bool) & ~bad


def lacosmic_score(
    image: np.ndarray, *, read_noise: float, objlim: float, sigclips: Sequence[float] = SIGCLIP_SWEEP
) -> np.ndarray:
    """Pseudo-probability of one chip from a sigclip sweep (see the module docstring).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 in [0, 1): 0 = never flagged.
    """
    levels = sorted(sigclips)
    score = np.zeros(np.shape(image), dtype=np.float32)
    for index, sigclip in enumerate(levels):
        level = np.float32((index + 1) / (len(levels) + 1))
        flagged = lacosmic_mask(image, read_noise=read_noise, objlim=objlim, sigclip=sigclip)
        score[flagged] = level
    return score


def sweep_threshold(sigclip: float, sigclips: Sequence[float] = SIGCLIP_SWEEP) -> float:
    """Score threshold whose mask is LACosmic's at ``sigclip`` (a value of the sweep)."""
    levels = sorted(sigclips)
    index = levels.index(sigclip)
    return (index + 0.5) / (len(levels) + 1)


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
    from crlib.model.exposure import read_exposure
    from crlib.model.predfile import ChipPrediction, prediction_path, write_prediction
    from crlib.provenance import code_version

    levels = sorted(set(float(s) for s in sigclips))
    if not levels:
        raise ConfigError("the LACosmic sigclip sweep needs at least one value")
    operating = min(levels, key=lambda s: abs(s - operating_sigclip))
    threshold = sweep_threshold(operating, levels)
    start = time.perf_counter()
    exposure = read_exposure(path)
    chips = []
    for extver, (sci, _dq) in exposure.chips.items():
        noise = chip_read_noise(exposure.primary, exposure.profile, extver, ccd=exposure.ccd(extver))
        score = lacosmic_score(sci, read_noise=noise, objlim=objlim, sigclips=levels)
        mask = (score > threshold).astype(np.uint8)
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
        "CRSWEEP": (",".join(f"{s:g}" for s in levels), "sigclip sweep behind CRPROB"),
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
