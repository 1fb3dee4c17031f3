"""The image classifier's read step: the chips of calibrated FLC/FLT files for :mod:`crlib.classify.image`.

:func:`read_chips` reads one file's SCI arrays (count rates turned into electrons) and their DQ
flags; :func:`classify_files` reads a visit's files and classifies them with
:func:`~crlib.classify.image.classify_arrays`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crlib.classify.features import DEFAULT_DETECTION, DetectionSettings, ImageFeatures
from crlib.classify.image import DEFAULT_THRESHOLDS, ImageThresholds, classify_arrays
from crlib.classify.labels import FieldTypeLabel
from crlib.errors import InputDataError
from crlib.formats.flc import chip_dq, sci_extensions

log = logging.getLogger(__name__)

__all__ = ["classify_files", "read_chips"]


def read_chips(path: Path) -> tuple[list[NDArray[np.float32]], list[NDArray[Any] | None]]:
    """SCI arrays (electrons) and matching DQ arrays of a calibrated FLC/FLT file.

    Every ``SCI`` extension is read, whatever the chip count or subarray shape; a chip without a
    same-shaped ``DQ`` of the same EXTVER gets ``None``. A science array in a rate unit
    (``BUNIT`` ending in ``/S``) is multiplied by the primary ``EXPTIME``.

    Parameters
    ----------
    path
        FLC/FLT file, ``.fits`` or ``.fits.gz``.

    Returns
    -------
    science, flags
        Per chip in file order: float32 (ny, nx) electrons, and the (ny, nx) DQ flags or ``None``.

    Raises
    ------
    crlib.errors.InputDataError
        If the file cannot be read, has no SCI data, or is a rate without ``EXPTIME``.
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            exptime = hdus[0].header.get("EXPTIME")
            science: list[NDArray[np.float32]] = []
            flags: list[NDArray[Any] | None] = []
            for extver, hdu in sci_extensions(hdus):
                if hdu.data is None:
                    continue
                data = np.asarray(hdu.data, dtype=np.float32)
                if str(hdu.header.get("BUNIT", "")).strip().upper().endswith("/S"):
                    if not exptime:
                        raise InputDataError(path, "SCI is a count rate and EXPTIME is missing")
                    data = data * np.float32(exptime)
                dq = chip_dq(hdus, extver)
                science.append(data)
                flags.append(dq if dq is not None and dq.shape == data.shape else None)
    except OSError as exc:
        raise InputDataError(path, f"cannot read ({exc})", fix="check the file or fetch it again") from exc
    if not science:
        raise InputDataError(path, "no SCI extension with data", fix="pass a calibrated FLC/FLT file")
    return science, flags


def classify_files(
    paths: Sequence[Path],
    *,
    settings: DetectionSettings = DEFAULT_DETECTION,
    thresholds: ImageThresholds = DEFAULT_THRESHOLDS,
) -> tuple[FieldTypeLabel, ImageFeatures]:
    """Classify the exposures in ``paths`` (one visit, or one exposure) from their pixels.

    Parameters
    ----------
    paths
        Calibrated FLC/FLT files (electrons) of one visit.
    settings
        Detection settings.
    thresholds
        Decision limits.

    Returns
    -------
    label, features
    """
    science, flags = [], []
    for path in paths:
        sci, dq = read_chips(Path(path))
        science.append(sci)
        flags.append(dq)
    label, features = classify_arrays(science, dq=flags, settings=settings, thresholds=thresholds)
    log.info("%s: %s", ", ".join(Path(p).name for p in paths), label.describe())
    return label, features
