"""Predict CRs for whole exposures: read the FLC, pick the model, run every chip, write ``_crpred.fits``.

Every chip the file holds is predicted, whatever the layout: full-frame two-chip exposures, one-
and two-chip subarrays, ``.fits.gz``, FLT as well as FLC (chips, shapes and CCDs come from the file:
:mod:`crlib.formats.chips`). :func:`predict_exposure` raises :class:`~crlib.errors.InputDataError`
for a bad file (corrupt, wrong instrument, a full-frame file lacking a chip, an all-NaN or constant
chip), naming the actual problem; :func:`predict_exposures` turns those into ``status="failed"``
records for that exposure only and carries on with the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from crlib.config import InferencePrecision
from crlib.errors import InputDataError, ModelError
from crlib.formats.chips import FIX_DOWNLOAD
from crlib.formats.flc import ExposureImage, read_exposure, rootname_from_path
from crlib.formats.prediction import ChipPrediction, prediction_path, write_prediction
from crlib.model.inference import MaskEngine, peak_memory_mb
from crlib.model.weights import LoadedModel, choose_model_name, load_shipped_model
from crlib.profiles import InstrumentProfile
from crlib.provenance import code_version
from crlib.records import PredictionResult

log = logging.getLogger(__name__)


def predict_exposure(
    path: Path,
    *,
    out_dir: Path,
    model: str | LoadedModel | None = None,
    device: str = "auto",
    precision: InferencePrecision = "fp32",
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
        Bad input file (see :func:`crlib.formats.flc.read_exposure`).
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
    precision: InferencePrecision,
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
    precision: InferencePrecision = "fp32",
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
