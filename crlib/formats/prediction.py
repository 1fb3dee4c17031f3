"""The prediction file ``<rootname>_crpred.fits``: write it atomically, read it back.

Layout::

    PRIMARY   ROOTNAME, INSTRUME, DETECTOR, FILTER, EXPTIME, SUBARRAY, APERTURE, CRMODEL, CRMODVER,
              CRTHRESH, CRLIBVER, CRDEVICE, CRPREC (fp32/bf16), CRSECS
    CRPROB,N  CR probability of chip N (N = the FLC's SCI EXTVER) as IEEE float16, 0 where the
              input was not finite. FITS has no 16-bit float BITPIX, so the float16 bit patterns
              are stored as unsigned 16-bit integers (BITPIX 16, BZERO 32768) with
              ``PROBTYPE = 'FLOAT16'``: view the integers as float16 (:func:`read_prediction` does).
              Header: CCDCHIP (the CCD, from the FLC's SCI header), NNONFIN (non-finite input
              pixels), NDQFLAG (DQ != 0), NCRPIX
    CRMASK,N  uint8, 1 = CR (probability > CRTHRESH, computed before rounding to float16)

There is one CRPROB/CRMASK pair per chip the FLC holds: two for a full-frame exposure, one or two
for a subarray; each has the shape of its SCI array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError
from crlib.float16 import float16_bits


@dataclass(frozen=True)
class ChipPrediction:
    """One chip's prediction.

    Attributes
    ----------
    extver
        SCI EXTVER of the chip in the FLC file.
    probability
        ``(ny, nx)`` CR probability (float32 in memory, float16 once read from a file).
    mask
        ``(ny, nx)`` uint8, 1 = CR.
    header
        Extra per-chip keywords (``CCDCHIP``, ``NNONFIN``, ``NDQFLAG``).
    """

    extver: int
    probability: np.ndarray
    mask: np.ndarray
    header: dict[str, Any]


def prediction_path(out_dir: Path, rootname: str) -> Path:
    """``<out_dir>/<rootname>_crpred.fits``."""
    return Path(out_dir) / f"{rootname}_crpred.fits"


def write_prediction(path: Path, chips: list[ChipPrediction], *, primary: dict[str, Any]) -> Path:
    """Write a prediction file atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination ``..._crpred.fits``.
    chips
        Per-chip predictions, in file order.
    primary
        Primary-header keywords (values must be FITS-serialisable).
    """
    from astropy.io import fits

    hdus: list[Any] = [fits.PrimaryHDU()]
    for key, value in primary.items():
        hdus[0].header[key] = value
    for chip in chips:
        bits = float16_bits(chip.probability)
        prob = fits.ImageHDU(bits, name="CRPROB", ver=chip.extver)
        prob.header["PROBTYPE"] = ("FLOAT16", "uint16 data are IEEE float16 bit patterns")
        mask = fits.ImageHDU(chip.mask.astype(np.uint8, copy=False), name="CRMASK", ver=chip.extver)
        for hdu in (prob, mask):
            for key, value in chip.header.items():
                hdu.header[key] = value
        hdus.extend([prob, mask])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fits.HDUList(hdus).writeto(partial, overwrite=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_prediction(path: Path) -> tuple[dict[str, Any], list[ChipPrediction]]:
    """Read a ``_crpred.fits`` file: primary keywords and the chips in file order.

    Raises
    ------
    InputDataError
        If the file is unreadable or holds no CRPROB/CRMASK pairs.
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            primary = dict(hdul[0].header)
            chips = []
            for hdu in hdul[1:]:
                if hdu.name != "CRPROB":
                    continue
                extver = int(hdu.header.get("EXTVER", 1))
                try:
                    mask_hdu = hdul["CRMASK", extver]
                except KeyError:
                    raise InputDataError(path, f"CRPROB,{extver} has no matching CRMASK,{extver}") from None
                header = {
                    k: hdu.header[k] for k in ("CCDCHIP", "NNONFIN", "NDQFLAG", "NCRPIX") if k in hdu.header
                }
                probability = _probability_from_hdu(hdu)
                mask = np.asarray(mask_hdu.data, dtype=np.uint8)
                if probability.ndim != 2 or mask.shape != probability.shape:
                    raise InputDataError(
                        path,
                        f"CRPROB,{extver} {probability.shape} and CRMASK,{extver} {mask.shape} differ",
                        fix="re-run `crlib infer`",
                    )
                chips.append(ChipPrediction(extver=extver, probability=probability, mask=mask, header=header))
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(
            path, f"cannot read prediction file ({exc})", fix="re-run `crlib infer`"
        ) from None
    if not chips:
        raise InputDataError(
            path, "no CRPROB extensions: not a crlib prediction file", fix="run `crlib infer`"
        )
    return primary, chips


def _probability_from_hdu(hdu: object) -> np.ndarray:
    data = np.asarray(hdu.data)  # type: ignore[attr-defined]
    if str(hdu.header.get("PROBTYPE", "")).upper() == "FLOAT16":  # type: ignore[attr-defined]
        return data.astype(np.uint16).view(np.float16)
    return data
