"""Predict CRs for whole exposures: read the FLC, pick the model, run every chip, write ``_crpred.fits``.

Every chip the file holds is predicted, whatever the layout: full-frame two-chip exposures, one-
and two-chip subarrays, ``.fits.gz``, FLT as well as FLC (chips, shapes and CCDs come from the file:
:mod:`crlib.model.layout`). :func:`predict_exposure` raises :class:`~crlib.errors.InputDataError`
for a bad file (corrupt, wrong instrument, a full-frame file lacking a chip, an all-NaN or constant
chip), naming the actual problem; :func:`predict_exposures` turns those into ``status="failed"``
records for that exposure only and carries on with the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError, ModelError
from crlib.formats.prediction import ChipPrediction, prediction_path, write_prediction
from crlib.model.inference import MaskEngine, Precision, peak_memory_mb
from crlib.model.layout import FIX_DOWNLOAD, FileLayout, chip_layout
from crlib.model.weights import LoadedModel, choose_model_name, load_shipped_model
from crlib.profiles import ChipLayout, InstrumentProfile, profile_for_header
from crlib.provenance import code_version
from crlib.records import PredictionResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExposureImage:
    """The pixels and facts of one calibrated exposure that inference needs.

    Attributes
    ----------
    path
        The FLC/FLT file (``.fits`` or ``.fits.gz``).
    rootname
        Lower-case ``ipppssoo``.
    profile
        Instrument profile matching INSTRUME/DETECTOR.
    filter
        Spectral filter (``CLEAR*`` ignored), or ``None``.
    exptime_s
        EXPTIME in seconds.
    chips
        ``{sci_extver: (sci (ny, nx) electrons, dq (ny, nx) or None)}`` for the chips the file
        holds, in EXTVER order; shapes are the file's (a subarray chip is smaller than the CCD).
    primary
        A few primary keywords (INSTRUME, DETECTOR, gain and read-noise keywords, CCDAMP).
    layout
        The file's chips (CCD of each SCI EXTVER), ``SUBARRAY`` and ``APERTURE``
        (see :mod:`crlib.model.layout`); ``None`` only for images built by hand.
    """

    path: Path
    rootname: str
    profile: InstrumentProfile
    filter: str | None
    exptime_s: float
    chips: dict[int, tuple[np.ndarray, np.ndarray | None]]
    primary: dict[str, Any]
    layout: FileLayout | None = None

    def ccd(self, extver: int) -> ChipLayout:
        """The CCD of chip ``SCI,extver``: the file's ``CCDCHIP``, else the profile's chip of that EXTVER."""
        if self.layout is not None:
            return self.layout.chip(extver).layout
        return self.profile.chip(extver)


def exposure_filter(header: Any) -> str | None:
    """The spectral filter from FILTER1/FILTER2 (ACS) or FILTER (WFC3), ignoring CLEAR wheels.

    :func:`crlib.align.exposures.header_filter`, with ``None`` when the header names none.
    """
    from crlib.align.exposures import header_filter

    return header_filter(header) or None


#: BUNIT values of a calibrated FLC/FLT chip in electrons.
ELECTRON_UNITS = ("ELECTRONS", "ELECTRON")


def _read_chip(hdul: Any, path: Path, extver: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One chip's SCI (float32 electrons) and DQ (or ``None``), checked for usable pixels."""
    try:
        sci_hdu = hdul["SCI", extver]
        data = sci_hdu.data
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(path, f"SCI,{extver} unreadable ({exc})", fix=FIX_DOWNLOAD) from None
    if data is None or data.ndim != 2 or data.size == 0:
        shape = "no data (NAXIS=0)" if data is None else f"shape {data.shape}"
        raise InputDataError(path, f"SCI,{extver} holds no 2-D image ({shape})", fix=FIX_DOWNLOAD)
    bunit = str(sci_hdu.header.get("BUNIT", "ELECTRONS")).strip().upper()
    if bunit not in ELECTRON_UNITS:
        raise InputDataError(
            path,
            f"SCI,{extver} is in {bunit}, deepCR needs electrons",
            fix="use the calibrated FLC/FLT product (BUNIT='ELECTRONS')",
        )
    sci = np.asarray(data, dtype=np.float32)
    is_finite = np.isfinite(sci)
    finite = sci if is_finite.all() else sci[is_finite]
    if finite.size == 0:
        raise InputDataError(path, f"SCI,{extver} has no finite pixels (all NaN/inf)", fix=FIX_DOWNLOAD)
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        raise InputDataError(
            path,
            f"SCI,{extver} is constant (every {'' if finite is sci else 'finite '}pixel {low:g}, "
            f"{sci.shape[0]}x{sci.shape[1]} px): "
            "it holds no image (a placeholder or header-only file)",
            fix="use the calibrated exposure as MAST delivers it; " + FIX_DOWNLOAD,
        )
    dq: np.ndarray | None = None
    try:
        dq_data = hdul["DQ", extver].data
        if dq_data is not None and dq_data.shape == sci.shape:
            dq = np.asarray(dq_data)
    except (KeyError, OSError, ValueError, TypeError):
        dq = None  # DQ is only counted (NDQFLAG); the truth's VALID plane keeps flagged pixels out of scores
    return sci, dq


def read_exposure(path: Path, *, expected_profile: InstrumentProfile | None = None) -> ExposureImage:
    """Read a calibrated exposure's chips and header facts.

    The chips are the ``SCI`` extensions the file holds (:func:`crlib.model.layout.chip_layout`):
    two for a full-frame exposure, one or two for a subarray; their shapes are the file's.

    Parameters
    ----------
    path
        FLC/FLT file, ``.fits`` or ``.fits.gz``.
    expected_profile
        Refuse files of another instrument.

    Raises
    ------
    InputDataError
        Unreadable FITS; unknown or wrong instrument; a full-frame file that lacks a chip
        (incomplete: download again); a malformed chip layout; a SCI extension without a 2-D
        image; non-electron units; a chip without finite pixels or with one constant value.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        hdul = fits.open(path, memmap=False)
    except FileNotFoundError:
        raise InputDataError(path, "file not found") from None
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise InputDataError(path, f"not a readable FITS file ({exc})", fix=FIX_DOWNLOAD) from None
    with hdul:
        try:
            primary = hdul[0].header
            instrume = str(primary.get("INSTRUME", "")).strip()
            detector = str(primary.get("DETECTOR", "")).strip()
            profile = profile_for_header(instrume, detector)
            if profile is None:
                raise InputDataError(
                    path,
                    f"instrument {instrume or '?'}/{detector or '?'} has no deepCR profile",
                    fix="only ACS/WFC and WFC3/UVIS exposures can be processed",
                )
            if expected_profile is not None and profile.name != expected_profile.name:
                raise InputDataError(
                    path,
                    f"is a {profile.instrume}/{profile.detector} exposure, expected "
                    f"{expected_profile.instrume}/{expected_profile.detector}",
                    fix="pass files of the configured instrument (CRLIB_INSTRUMENT)",
                )
            layout = chip_layout(hdul, path, profile)
            chips = {extver: _read_chip(hdul, path, extver) for extver in layout.extvers}
        except InputDataError:
            raise
        except (OSError, ValueError, TypeError, EOFError) as exc:  # a gzip stream or HDU cut short
            raise InputDataError(path, f"not a readable FITS file ({exc})", fix=FIX_DOWNLOAD) from None
        rootname = str(primary.get("ROOTNAME", "")).strip().lower() or rootname_from_path(path)
        keep = ("INSTRUME", "DETECTOR", "CCDAMP", *profile.gain_keywords, *profile.readnoise_keywords)
        facts = {key: primary[key] for key in keep if key in primary}
        if layout.subarray:
            log.debug("%s: subarray %s, chips %s", path.name, layout.aperture or "?", layout.extvers)
        return ExposureImage(
            path=path,
            rootname=rootname,
            profile=profile,
            filter=exposure_filter(primary),
            exptime_s=float(primary.get("EXPTIME", 0.0) or 0.0),
            chips=chips,
            primary=facts,
            layout=layout,
        )


def rootname_from_path(path: Path) -> str:
    """``ipppssoo`` from a file name such as ``jabc01xyq_flc.fits.gz`` (lower case)."""
    return Path(path).name.split("_")[0].split(".")[0].lower()


def predict_exposure(
    path: Path,
    *,
    out_dir: Path,
    model: str | LoadedModel | None = None,
    device: str = "auto",
    precision: Precision = "fp32",
    threshold: float | None = None,
    threads: int | None = None,
    expected_profile: InstrumentProfile | None = None,
    engine: MaskEngine | None = None,
) -> PredictionResult:
    """Predict CRs in every chip of one exposure and write ``<out_dir>/<rootname>_crpred.fits``.

    Parameters
    ----------
    path
        Calibrated exposure (FLC/FLT, electrons).
    out_dir
        Where the prediction file goes.
    model
        Model name or loaded model; default: the profile's per-filter model, else its global model.
    device, precision, threads
        See :class:`~crlib.model.inference.MaskEngine`.
    threshold
        Probability threshold of CRMASK; default the profile's.
    expected_profile
        Reject files of another instrument.
    engine
        A ready engine to reuse (its model wins over ``model``).

    Raises
    ------
    InputDataError
        Bad input file (see :func:`read_exposure`).
    ModelError
        Unknown model or unusable weights.
    """
    start = time.perf_counter()
    exposure = read_exposure(path, expected_profile=expected_profile)
    return _predict_read_exposure(
        exposure,
        start=start,
        out_dir=out_dir,
        model=model,
        device=device,
        precision=precision,
        threshold=threshold,
        threads=threads,
        engine=engine,
    )


def _predict_read_exposure(
    exposure: ExposureImage,
    *,
    start: float,
    out_dir: Path,
    model: str | LoadedModel | None,
    device: str,
    precision: Precision,
    threshold: float | None,
    threads: int | None,
    engine: MaskEngine | None,
) -> PredictionResult:
    if engine is None:
        loaded = model if isinstance(model, LoadedModel) else None
        if loaded is None:
            name = choose_model_name(
                exposure.profile, exposure.filter, override=model if isinstance(model, str) else None
            )
            loaded = load_shipped_model(name)
        engine = MaskEngine(loaded, device=device, precision=precision, threads=threads)
    cut = exposure.profile.threshold if threshold is None else float(threshold)
    if not 0.0 < cut < 1.0:
        raise ModelError(f"threshold must lie strictly between 0 and 1, got {cut}")
    chips = []
    for extver, (sci, dq) in exposure.chips.items():
        try:
            result = engine.predict_chip(sci)
        except ValueError as exc:  # e.g. a chip a normalising model cannot standardise
            raise InputDataError(exposure.path, f"SCI,{extver}: {exc}", fix=FIX_DOWNLOAD) from None
        mask = (result.probability > cut).astype(np.uint8)
        header = {
            "CCDCHIP": exposure.ccd(extver).ccdchip,
            "NNONFIN": int(result.nonfinite.sum()),
            "NDQFLAG": int(np.count_nonzero(dq)) if dq is not None else 0,
            "NCRPIX": int(mask.sum()),
        }
        chips.append(ChipPrediction(extver=extver, probability=result.probability, mask=mask, header=header))
        log.debug("%s SCI,%d: %d CR pixels", exposure.rootname, extver, header["NCRPIX"])
    seconds = time.perf_counter() - start
    primary = {
        "ROOTNAME": exposure.rootname,
        "INSTRUME": exposure.profile.instrume,
        "DETECTOR": exposure.profile.detector,
        "FILTER": exposure.filter or "",
        "EXPTIME": exposure.exptime_s,
        "SUBARRAY": exposure.layout.subarray if exposure.layout is not None else False,
        "APERTURE": exposure.layout.aperture if exposure.layout is not None else "",
        "CRMODEL": engine.model.name,
        "CRMODVER": engine.model.version,
        "CRTHRESH": cut,
        "CRLIBVER": code_version(),
        "CRDEVICE": engine.description,
        "CRPREC": engine.precision,
        "CRSECS": round(seconds, 3),
    }
    written = write_prediction(prediction_path(out_dir, exposure.rootname), chips, primary=primary)
    return PredictionResult(
        rootname=exposure.rootname,
        model_name=engine.model.name,
        model_version=engine.model.version,
        code_version=code_version(),
        threshold=cut,
        device=engine.description,
        seconds=seconds,
        peak_memory_mb=peak_memory_mb(engine.device),
        path=str(written),
    )


def predict_exposures(
    paths: Iterable[Path],
    *,
    out_dir: Path,
    model: str | None = None,
    device: str = "auto",
    precision: Precision = "fp32",
    threshold: float | None = None,
    threads: int | None = None,
    expected_profile: InstrumentProfile | None = None,
) -> list[PredictionResult]:
    """:func:`predict_exposure` over many files; a bad file fails alone (``status="failed"``, reason).

    Engines are reused per model name, so the weights are prepared once per run.
    """
    engines: dict[str, MaskEngine] = {}
    results = []
    for path in paths:
        path = Path(path)
        try:
            start = time.perf_counter()
            exposure = read_exposure(path, expected_profile=expected_profile)
            name = choose_model_name(exposure.profile, exposure.filter, override=model)
            if name not in engines:
                engines[name] = MaskEngine(
                    load_shipped_model(name), device=device, precision=precision, threads=threads
                )
            results.append(
                _predict_read_exposure(
                    exposure,
                    start=start,
                    out_dir=out_dir,
                    model=None,
                    device=device,
                    precision=precision,
                    threshold=threshold,
                    threads=threads,
                    engine=engines[name],
                )
            )
        except InputDataError as exc:
            log.warning("%s", exc)
            results.append(failed_prediction(path, str(exc), model_name=model or "", device=device))
    return results


def failed_prediction(
    path: Path, reason: str, *, model_name: str, device: str, model_version: str = ""
) -> PredictionResult:
    """The record of an exposure that could not be predicted (``status="failed"`` with ``reason``)."""
    return PredictionResult(
        rootname=rootname_from_path(path),
        model_name=model_name,
        model_version=model_version,
        code_version=code_version(),
        threshold=float("nan"),
        device=device,
        seconds=0.0,
        peak_memory_mb=0.0,
        path="",
        status="failed",
        reason=reason,
    )
