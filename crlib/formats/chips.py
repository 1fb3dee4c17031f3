"""Which chips a calibrated exposure holds, read from the file itself (never assumed from the profile).

Real calibrated ACS/WFC and WFC3/UVIS files come as full-frame two-chip exposures, one-chip
subarrays (ACS/WFC ``WFC1-512``, ``WFC1-1K``, ``WFC1-2K``, ``WFC1A-1K`` ...; WFC3/UVIS
``UVIS2-C512C-SUB``: ``SCI,1`` only), two-chip subarrays, ``.fits`` or ``.fits.gz``, FLC or FLT.
:func:`chip_layout` reads the chips present (the EXTVERs of the ``SCI`` extensions), their shapes
(``NAXIS2`` x ``NAXIS1``) and which CCD each one is (the ``SCI`` header's ``CCDCHIP``: in a WFC1
subarray ``SCI,1`` is CCDCHIP 1, while in a full-frame file ``SCI,1`` is CCDCHIP 2), and tells
the layouts that are legitimate from damaged files:

* a subarray (primary ``SUBARRAY=T``) may hold any non-empty subset of the profile's chips;
* a full-frame file (``SUBARRAY=F``, or the keyword absent, as screening reads it) must hold every
  chip of the profile: one that lacks a chip is incomplete and is reported as such (with the
  ``NEXTEND`` count when the file ends early), with the advice to download it again;
* a ``SCI`` extension that is no chip of the profile (``SCI,3`` of ACS/WFC, an unknown
  ``CCDCHIP``, two extensions claiming one CCD) is a malformed file;
* a file whose chips are complete but that ends before ``NEXTEND`` extensions is read (its chips
  are intact) with a warning; screening rejects it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crlib.errors import InputDataError
from crlib.profiles import ChipLayout, InstrumentProfile

log = logging.getLogger(__name__)

#: Advice for a damaged file.
FIX_DOWNLOAD = "re-download the file (it may be truncated or corrupt)"


@dataclass(frozen=True, slots=True)
class ChipInfo:
    """One chip as the file holds it.

    Attributes
    ----------
    extver
        EXTVER of its ``SCI`` (and ``ERR``/``DQ``) extension.
    shape
        ``(ny, nx)`` = (``NAXIS2``, ``NAXIS1``) in pixels; ``(0, 0)`` when the HDU holds no image.
    layout
        The profile's CCD this chip is (from ``CCDCHIP``; the profile's chip of that EXTVER when
        the keyword is absent).
    """

    extver: int
    shape: tuple[int, int]
    layout: ChipLayout


@dataclass(frozen=True, slots=True)
class FileLayout:
    """The chips of one exposure file and whether it is a subarray.

    Attributes
    ----------
    chips
        Per chip, in EXTVER order.
    subarray
        Primary ``SUBARRAY`` (``False`` when absent).
    aperture
        Primary ``APERTURE`` (``""`` when absent), e.g. ``WFC1-512`` or ``UVIS2-C512C-SUB``.
    """

    chips: tuple[ChipInfo, ...]
    subarray: bool
    aperture: str

    @property
    def extvers(self) -> tuple[int, ...]:
        """The SCI EXTVERs present."""
        return tuple(chip.extver for chip in self.chips)

    def chip(self, extver: int) -> ChipInfo:
        """The chip with this SCI EXTVER (``KeyError`` if absent)."""
        for chip in self.chips:
            if chip.extver == extver:
                return chip
        raise KeyError(f"no SCI,{extver} in this file (chips: {self.extvers})")


def is_true(value: Any) -> bool:
    """A FITS logical as Python bool (``T``/``TRUE``/``Y``/``YES`` strings count as true)."""
    if isinstance(value, str):
        return value.strip().upper() in {"T", "TRUE", "Y", "YES"}
    return bool(value)


def layout_for_ccdchip(profile: InstrumentProfile, ccdchip: int) -> ChipLayout | None:
    """The profile's chip with this ``CCDCHIP`` value, or ``None``."""
    return next((chip for chip in profile.chips if chip.ccdchip == ccdchip), None)


def _names(profile: InstrumentProfile) -> str:
    return f"{profile.instrume}/{profile.detector}"


def _hdu_shape(header: Mapping[str, Any]) -> tuple[int, int]:
    if int(header.get("NAXIS", 0) or 0) != 2:
        return (0, 0)
    return (int(header.get("NAXIS2", 0) or 0), int(header.get("NAXIS1", 0) or 0))


def _which_ccd(path: Path, profile: InstrumentProfile, extver: int, header: Mapping[str, Any]) -> ChipLayout:
    ccdchip = header.get("CCDCHIP")
    if ccdchip is None:
        try:
            return profile.chip(extver)
        except KeyError:
            raise InputDataError(
                path,
                f"SCI,{extver} is no chip of {_names(profile)} (its files hold SCI,"
                f"{' and SCI,'.join(str(c.sci_extver) for c in profile.chips)}) and has no CCDCHIP",
                fix="pass a calibrated FLC/FLT file as MAST delivers it",
            ) from None
    try:
        layout = layout_for_ccdchip(profile, int(ccdchip))
    except (TypeError, ValueError):
        layout = None
    if layout is None:
        known = ", ".join(str(c.ccdchip) for c in profile.chips)
        raise InputDataError(
            path,
            f"SCI,{extver} has CCDCHIP={ccdchip!r}, not a CCD of {_names(profile)} ({known})",
            fix="pass a calibrated FLC/FLT file as MAST delivers it",
        )
    return layout


def chip_layout(hdul: Any, path: Path, profile: InstrumentProfile) -> FileLayout:
    """Read the chips of an open FITS file (headers only) and check the layout is a real one.

    Parameters
    ----------
    hdul
        The open ``astropy.io.fits.HDUList``.
    path
        The file (for messages).
    profile
        The file's instrument profile.

    Returns
    -------
    FileLayout
        Chips in EXTVER order with shapes and CCDs.

    Raises
    ------
    InputDataError
        No SCI extension; a full-frame file that lacks a chip (an incomplete or truncated file);
        more SCI extensions than the profile has chips; an unknown ``CCDCHIP``; two extensions of
        one EXTVER or one CCD.
    """
    primary = hdul[0].header
    subarray = is_true(primary.get("SUBARRAY", False))
    aperture = str(primary.get("APERTURE", "") or "").strip()
    n_extensions = len(hdul) - 1
    nextend = primary.get("NEXTEND")
    ends_early = isinstance(nextend, int) and not isinstance(nextend, bool) and n_extensions < nextend
    early = (
        f"; the file ends after {n_extensions} extension(s) but NEXTEND={nextend}: it is truncated"
        if ends_early
        else ""
    )
    chips: list[ChipInfo] = []
    for hdu in hdul[1:]:
        if hdu.name != "SCI":
            continue
        extver = int(hdu.ver)
        if any(chip.extver == extver for chip in chips):
            raise InputDataError(path, f"holds two SCI,{extver} extensions", fix=FIX_DOWNLOAD)
        layout = _which_ccd(path, profile, extver, hdu.header)
        twin = next((chip for chip in chips if chip.layout.ccdchip == layout.ccdchip), None)
        if twin is not None:
            raise InputDataError(
                path,
                f"SCI,{twin.extver} and SCI,{extver} both say CCDCHIP={layout.ccdchip} ({layout.name})",
                fix="pass a calibrated FLC/FLT file as MAST delivers it",
            )
        chips.append(ChipInfo(extver=extver, shape=_hdu_shape(hdu.header), layout=layout))
    chips.sort(key=lambda chip: chip.extver)
    expected = len(profile.chips)
    if not chips:
        raise InputDataError(
            path, f"no SCI extension: not a calibrated FLC/FLT exposure{early}", fix=FIX_DOWNLOAD
        )
    if len(chips) > expected:
        raise InputDataError(
            path,
            f"holds {len(chips)} SCI extensions; {_names(profile)} has {expected} chips",
            fix="pass a calibrated FLC/FLT file as MAST delivers it",
        )
    if not subarray and len(chips) < expected:
        present = {chip.extver for chip in chips}
        missing = [f"SCI,{c.sci_extver}" for c in profile.chips if c.sci_extver not in present]
        said = "SUBARRAY=F" if "SUBARRAY" in primary else "no SUBARRAY keyword"
        raise InputDataError(
            path,
            f"full-frame exposure ({said}) lacks {', '.join(missing) or 'a chip'}: a full-frame "
            f"{_names(profile)} file holds {expected} chips, this one {len(chips)}, so it is incomplete"
            f"{early}",
            fix=FIX_DOWNLOAD + "; a subarray exposure says SUBARRAY=T in its primary header",
        )
    if ends_early:
        log.warning(
            "%s: the file ends after %d extension(s) but NEXTEND=%s: truncated after its chips, "
            "which are complete and are used (screening rejects such a file: download it again)",
            path,
            n_extensions,
            nextend,
        )
    return FileLayout(chips=tuple(chips), subarray=subarray, aperture=aperture)
