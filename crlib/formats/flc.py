"""Reading calibrated exposures (FLC/FLT, ``.fits`` or ``.fits.gz``): chips in electrons, DQ, header facts.

:func:`read_exposure` returns every chip the file holds (:mod:`crlib.formats.chips` says which),
checked for usable pixels, with the facts inference and scoring need; it raises
:class:`~crlib.errors.InputDataError` naming the actual problem (corrupt file, wrong instrument, a
full-frame file lacking a chip, non-electron units, an all-NaN or constant chip).

The read steps of the stages that need the chips as stored, unchecked (each with its own error
messages), use the smaller readers: :func:`sci_extensions` and :func:`chip_dq` over an open file,
one chip at a time (only what is accessed is read), and :func:`read_chip_sci` for one chip's
science array.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError
from crlib.formats.chips import FIX_DOWNLOAD, FileLayout, chip_layout
from crlib.profiles import ChipLayout, InstrumentProfile, profile_for_header

log = logging.getLogger(__name__)

__all__ = [
    "ELECTRON_UNITS",
    "ExposureImage",
    "chip_dq",
    "exposure_filter",
    "header_filter",
    "read_chip_sci",
    "read_exposure",
    "rootname_from_path",
    "sci_extensions",
]


def header_filter(primary: Any) -> str:
    """The filter that shapes an exposure's bandpass, from its primary header.

    The first of ``FILTER1``, ``FILTER2`` (ACS) and ``FILTER`` (WFC3) that is set and is not a
    ``CLEAR`` wheel position, upper case; ``""`` when none is.
    """
    for key in ("FILTER1", "FILTER2", "FILTER"):
        value = str(primary.get(key, "")).strip().upper()
        if value and not value.startswith("CLEAR") and value != "N/A":
            return value
    return ""


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
        (see :mod:`crlib.formats.chips`); ``None`` only for images built by hand.
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

    :func:`header_filter`, with ``None`` when the header names none.
    """
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

    The chips are the ``SCI`` extensions the file holds (:func:`crlib.formats.chips.chip_layout`):
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


def sci_extensions(hdul: Any) -> Iterator[tuple[int, Any]]:
    """``(EXTVER, HDU)`` of every ``SCI`` extension of an open FITS file, in file order.

    Only headers are read here: a chip's pixels are read when the caller accesses ``hdu.data``
    (the file is opened with ``memmap=False`` by the read steps, so they are then held in memory
    until the file is closed).

    Parameters
    ----------
    hdul
        The open ``astropy.io.fits.HDUList``.

    Yields
    ------
    extver, hdu
        The ``EXTVER`` keyword (1 when absent) and the image HDU (``EXTNAME`` ``SCI``, any case).
    """
    for hdu in hdul:
        if str(hdu.header.get("EXTNAME", "")).upper() == "SCI":
            yield int(hdu.header.get("EXTVER", 1)), hdu


def chip_dq(hdul: Any, extver: int) -> np.ndarray | None:
    """The ``DQ,extver`` array of an open FITS file as stored (integer flags, (ny, nx) pixels).

    Parameters
    ----------
    hdul
        The open ``astropy.io.fits.HDUList``.
    extver
        EXTVER of the chip (that of its ``SCI`` extension).

    Returns
    -------
    numpy.ndarray or None
        The flags in the file's dtype; ``None`` when the file has no ``DQ,extver`` extension or
        it holds no data.
    """
    if ("DQ", extver) not in hdul:
        return None
    data = hdul["DQ", extver].data
    return None if data is None else np.asarray(data)


def read_chip_sci(path: Path, extver: int) -> np.ndarray:
    """One chip's science array, float32 (ny, nx), in the file's unit (electrons for an FLC/FLT).

    Only ``SCI,extver`` is read (no DQ, no ERR); the file is closed on return.

    Parameters
    ----------
    path
        FLC/FLT file, ``.fits`` or ``.fits.gz``.
    extver
        EXTVER of the chip.

    Raises
    ------
    KeyError
        The file has no ``SCI,extver``.
    OSError
        The file cannot be read.
    """
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul["SCI", extver].data, dtype=np.float32)
