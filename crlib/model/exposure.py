"""Predict CRs for whole exposures: read the FLC, pick the model, run every chip, write ``_crpred.fits``.

:func:`predict_exposure` raises :class:`~crlib.errors.InputDataError` for a bad file (corrupt,
wrong instrument, missing chip, all-NaN chip); :func:`predict_exposures` turns those into
``status="failed"`` records for that exposure only and carries on with the others.
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
from crlib.model.inference import MaskEngine, Precision, peak_memory_mb
from crlib.model.predfile import ChipPrediction, prediction_path, write_prediction
from crlib.model.weights import LoadedModel, choose_model_name, load_shipped_model
from crlib.profiles import InstrumentProfile, profile_for_header
from crlib.provenance import code_version
from crlib.records import PredictionResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExposureImage:
    """The pixels and facts of one calibrated exposure that inference needs.

    Attributes
    ----------
    path
        The FLC/FLT file.
    rootname
        Lower-case ``ipppssoo``.
    profile
        Instrument profile matching INSTRUME/DETECTOR.
    filter
        Spectral filter (``CLEAR*`` ignored), or ``None``.
    exptime_s
        EXPTIME in seconds.
    chips
        ``{sci_extver: (sci (ny, nx) electrons, dq (ny, nx) or None)}`` in profile order.
    primary
        A few primary keywords (INSTRUME, DETECTOR, gain and read-noise keywords).
    """

    path: Path
    rootname: str
    profile: InstrumentProfile
    filter: str | None
    exptime_s: float
    chips: dict[int, tuple[np.ndarray, np.ndarray | None]]
    primary: dict[str, Any]


def exposure_filter(header: Any) -> str | None:
    """The spectral filter from FILTER1/FILTER2 (ACS) or FILTER (WFC3), ignoring CLEAR wheels."""
    for key in ("FILTER", "FILTER1", "FILTER2"):
        value = str(header.get(key, "")).strip().upper()
        if value and not value.startswith("CLEAR") and value != "N/A":
            return value
    return None


def read_exposure(path: Path, *, expected_profile: InstrumentProfile | None = None) -> ExposureImage:
    """Read a calibrated exposure's chips and header facts.

    Raises
    ------
    InputDataError
        Unreadable FITS, unknown/wrong instrument, missing SCI extension, non-2-D data,
        non-electron units, or a chip without finite pixels.
    """
    from astropy.io import fits

    path = Path(path)
    fix_download = "re-download the file (it may be truncated or corrupt)"
    try:
        hdul = fits.open(path, memmap=False)
    except FileNotFoundError:
        raise InputDataError(path, "file not found") from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(path, f"not a readable FITS file ({exc})", fix=fix_download) from None
    with hdul:
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
        chips: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        for layout in profile.chips:
            try:
                sci_hdu = hdul["SCI", layout.sci_extver]
                data = sci_hdu.data
            except KeyError:
                raise InputDataError(
                    path, f"missing extension SCI,{layout.sci_extver}", fix=fix_download
                ) from None
            except (OSError, ValueError, TypeError) as exc:
                raise InputDataError(
                    path, f"SCI,{layout.sci_extver} unreadable ({exc})", fix=fix_download
                ) from None
            if data is None or data.ndim != 2:
                raise InputDataError(path, f"SCI,{layout.sci_extver} holds no 2-D image", fix=fix_download)
            bunit = str(sci_hdu.header.get("BUNIT", "ELECTRONS")).strip().upper()
            if bunit != "ELECTRONS":
                raise InputDataError(
                    path,
                    f"SCI,{layout.sci_extver} is in {bunit}, deepCR needs electrons",
                    fix="use the calibrated FLC/FLT product (BUNIT='ELECTRONS')",
                )
            sci = np.asarray(data, dtype=np.float32)
            if not np.isfinite(sci).any():
                raise InputDataError(
                    path, f"SCI,{layout.sci_extver} has no finite pixels (all NaN/inf)", fix=fix_download
                )
            dq: np.ndarray | None = None
            try:
                dq_data = hdul["DQ", layout.sci_extver].data
                if dq_data is not None and dq_data.shape == sci.shape:
                    dq = np.asarray(dq_data)
            except KeyError:
                dq = None
            chips[layout.sci_extver] = (sci, dq)
        rootname = str(primary.get("ROOTNAME", "")).strip().lower() or path.name.split("_")[0].lower()
        keep = ("INSTRUME", "DETECTOR", *profile.gain_keywords, *profile.readnoise_keywords)
        facts = {key: primary[key] for key in keep if key in primary}
        return ExposureImage(
            path=path,
            rootname=rootname,
            profile=profile,
            filter=exposure_filter(primary),
            exptime_s=float(primary.get("EXPTIME", 0.0) or 0.0),
            chips=chips,
            primary=facts,
        )


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
        result = engine.predict_chip(sci)
        mask = (result.probability > cut).astype(np.uint8)
        header = {
            "CCDCHIP": exposure.profile.chip(extver).ccdchip,
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
        rootname=path.name.split("_")[0].lower(),
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
