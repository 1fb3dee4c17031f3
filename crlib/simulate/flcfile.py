"""Write simulated exposures as ACS/WFC FLC files built on the real template, plus their truth files.

Every keyword of the template stays unless it would describe the template's exposure instead of
the simulated one: identity, timing, target, filters, pointing, photometry, statistics and the
WCS are rewritten; the template's a-posteriori (Gaia-fit) alternate WCSs, headerlets and WCSCORR
table are dropped (they belong to the real exposure); the primary WCS is named
``IDC_4bb1536cj`` (a priori, not aligned) because the header pointing carries an injected error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from crlib.simulate.geometry import ChipWindow, FloatArray, orientat_deg, set_crval_cd
from crlib.simulate.programs import FilterSpec
from crlib.simulate.template import Template

A_PRIORI_WCSNAME = "IDC_4bb1536cj"
SIMULATOR_VERSION = "crlib-sim/1"
_ALTERNATE_WCS = re.compile(
    r"^(WCSNAME|WCSAXES|CRPIX[12]|CUNIT[12]|CTYPE[12]|CRVAL[12]|RADESYS|CD[12]_[12]|CRDER[12]|WCSTYPE|"
    r"RMS_RA|RMS_DEC|HDRNAME)[A-Z]$"
)
_A_POSTERIORI_KEYS = ("RMS_RA", "RMS_DEC", "CRDER1", "CRDER2", "NMATCHES", "FITGEOM", "HDRNAME", "MDRIZSKY")


@dataclass(frozen=True)
class ExposureMeta:
    """Header facts of one simulated exposure."""

    rootname: str
    visit: str
    proposal_id: int
    target_name: str
    target_ra: float
    target_dec: float
    filter: FilterSpec
    exptime_s: float
    expstart_mjd: float
    pa_v3_deg: float
    postarg_arcsec: tuple[float, float]
    field_type: str
    seed: int
    size: str
    aperture: str | None = None
    file_extvers: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChipData:
    """Arrays and header WCS of one chip window."""

    window: ChipWindow
    crval: tuple[float, float]
    cd: FloatArray
    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    mean_dark_e: float


def _drop_alternate_wcs(header: fits.Header) -> None:
    for key in [k for k in header if _ALTERNATE_WCS.match(k)]:
        del header[key]
    for key in _A_POSTERIORI_KEYS:
        header.remove(key, ignore_missing=True, remove_all=True)


def _set_chip_wcs(header: fits.Header, chip: ChipData, template_header: fits.Header) -> None:
    window = chip.window
    set_crval_cd(header, chip.crval, chip.cd)
    header["CRPIX1"] = float(template_header["CRPIX1"]) - window.x0
    header["CRPIX2"] = float(template_header["CRPIX2"]) - window.y0
    header["LTV1"] = float(-window.x0)
    header["LTV2"] = float(-window.y0)
    header["ORIENTAT"] = orientat_deg(chip.cd)
    header["WCSNAME"] = A_PRIORI_WCSNAME
    header["WCSTYPE"] = "undistorted not aligned"


def _statistics(header: fits.Header, chip: ChipData) -> None:
    good = chip.dq == 0
    values = chip.sci[good]
    snr = values / chip.err[good]
    header["NGOODPIX"] = int(good.sum())
    header["GOODMIN"] = float(values.min()) if values.size else 0.0
    header["GOODMAX"] = float(values.max()) if values.size else 0.0
    header["GOODMEAN"] = float(values.mean()) if values.size else 0.0
    if "SNRMIN" in header:
        header["SNRMIN"] = float(snr.min()) if snr.size else 0.0
        header["SNRMAX"] = float(snr.max()) if snr.size else 0.0
        header["SNRMEAN"] = float(snr.mean()) if snr.size else 0.0


def _s_region(header: fits.Header, template: Template, chip: ChipData) -> str:
    wcs = template.chip_wcs(chip.window.sci_extver, chip.crval, chip.cd)
    w = chip.window
    corners = np.array(
        [[w.x0, w.y0], [w.x0 + w.nx - 1, w.y0], [w.x0 + w.nx - 1, w.y0 + w.ny - 1], [w.x0, w.y0 + w.ny - 1]]
    )
    sky = wcs.all_pix2world(corners, 0)
    return "POLYGON ICRS " + " ".join(f"{ra:.8f} {dec:.8f}" for ra, dec in sky)


def _primary_header(
    template: Template, meta: ExposureMeta, n_extensions: int, windows: list[ChipWindow]
) -> fits.Header:
    header = template.primary.copy()
    start = Time(meta.expstart_mjd, format="mjd", scale="utc")
    end_mjd = meta.expstart_mjd + meta.exptime_s / 86400.0
    filter1, filter2 = meta.filter.header_filters()
    header["NEXTEND"] = n_extensions
    header["DATE"] = Time(meta.expstart_mjd + 2.0, format="mjd").strftime("%Y-%m-%d")
    header["FILENAME"] = f"{meta.rootname}_flc.fits"
    header["ROOTNAME"] = meta.rootname
    header["TARGNAME"] = meta.target_name
    header["RA_TARG"] = meta.target_ra
    header["DEC_TARG"] = meta.target_dec
    header["PROPOSID"] = meta.proposal_id
    header["LINENUM"] = f"{meta.visit[4:6]}.{int(meta.rootname[6:8], 36):03d}"
    header["PR_INV_L"] = "Simulated"
    header["PR_INV_F"] = "crlib"
    header["PR_INV_M"] = ""
    header["DATE-OBS"] = start.strftime("%Y-%m-%d")
    header["TIME-OBS"] = start.strftime("%H:%M:%S")
    header["EXPSTART"] = meta.expstart_mjd
    header["EXPEND"] = end_mjd
    header["EXPTIME"] = meta.exptime_s
    header["DARKTIME"] = meta.exptime_s + 3.2
    header["PA_V3"] = meta.pa_v3_deg
    header["POSTARG1"], header["POSTARG2"] = meta.postarg_arcsec
    header["PROCTIME"] = meta.expstart_mjd + 1.0
    header["FILTER1"], header["FILTER2"] = filter1, filter2
    full = meta.size == "full" and meta.aperture is None
    header["SUBARRAY"] = not full
    header["APERTURE"] = meta.aperture or ("WFC" if full else "WFC-SIM-CROP")
    header["PROPAPER"] = header["APERTURE"]
    header["ASN_ID"] = f"{meta.visit}010".upper()
    header["ASN_TAB"] = f"{meta.visit}010_asn.fits"
    header["ASN_MTYP"] = "EXP-DTH"
    header["SIMULATE"] = (True, "synthetic exposure written by crlib.simulate")
    header["SIMVERS"] = (SIMULATOR_VERSION, "simulator version")
    header["SIMFTYPE"] = (meta.field_type, "simulated field type")
    header["SIMSEED"] = (meta.seed, "simulation seed of the archive")
    header["SIMSIZE"] = (meta.size, "full chips or small crops (see LTV1/2)")
    header.add_history(f"crlib.simulate: synthetic pixels on the jbt122x8q template, windows {windows}")
    return header


def build_flc(template: Template, meta: ExposureMeta, chips: list[ChipData]) -> fits.HDUList:
    """Assemble the FLC HDU list (primary, SCI/ERR/DQ per chip, D2IMARR, WCSDVARR).

    Parameters
    ----------
    template
        Real template (headers and distortion arrays).
    meta
        Exposure identity, timing and configuration.
    chips
        One :class:`ChipData` per chip, in SCI extver order; a subarray's chips are written with the
        EXTVERs of ``meta.file_extvers`` (``SCI,1`` for a one-chip file), their headers from the
        template's full-frame chip.
    """
    extensions: list[fits.ImageHDU] = []
    distortion = [
        fits.ImageHDU(data=hdu.data.copy(), header=hdu.header.copy()) for hdu in template.distortion
    ]
    file_extvers = meta.file_extvers or tuple(chip.window.sci_extver for chip in chips)
    for chip, file_extver in zip(chips, file_extvers, strict=True):
        extver = chip.window.sci_extver
        template_sci = template.chip_headers["SCI", extver]
        for name, data in (("SCI", chip.sci), ("ERR", chip.err), ("DQ", chip.dq)):
            header = template.chip_headers[name, extver].copy()
            _drop_alternate_wcs(header)
            _set_chip_wcs(header, chip, template_sci)
            if name == "SCI":
                header["CTYPE1"], header["CTYPE2"] = template_sci["CTYPE1"], template_sci["CTYPE2"]
            header["EXTVER"] = file_extver
            header["ROOTNAME"] = meta.rootname
            header["EXPNAME"] = meta.rootname
            header["SIZAXIS1"] = chip.window.nx
            header["SIZAXIS2"] = chip.window.ny
            header["CENTERA1"] = (
                int(template_sci.get("CENTERA1", 2073)) - 2048 + chip.window.x0 + chip.window.nx // 2
            )
            header["CENTERA2"] = (
                int(template_sci.get("CENTERA2", 1035)) - 1024 + chip.window.y0 + chip.window.ny // 2
            )
            if name == "SCI":
                header["MEANDARK"] = chip.mean_dark_e
                header["PHOTMODE"] = f"ACS WFC1 {meta.filter.name} MJD#{meta.expstart_mjd:.4f}"
                header["PHOTFLAM"] = meta.filter.photflam
                header["PHOTPLAM"] = meta.filter.pivot_angstrom
                header["PHOTBW"] = meta.filter.bandwidth_angstrom
                header["S_REGION"] = _s_region(header, template, chip)
            if name in ("SCI", "ERR"):
                _statistics(header, chip)
                header["BUNIT"] = "ELECTRONS"
            extensions.append(fits.ImageHDU(data=data, header=header))
        for key in ("D2IM1.EXTVER", "D2IM2.EXTVER", "DP1.EXTVER", "DP2.EXTVER"):
            table_version = int(template_sci[key])
            for hdu in distortion:
                if hdu.header["EXTVER"] == table_version and hdu.header["EXTNAME"] in ("D2IMARR", "WCSDVARR"):
                    # astropy (and so HSTWCS/drizzlepac/tweakwcs) index lookup tables at
                    # (image_pixel - CRVAL) / CDELT + CRPIX; with image = full-chip + LTV the
                    # tables keep addressing the full chip when CRVAL = LTV (see module docstring).
                    hdu.header["CRVAL1"] = float(-chip.window.x0)
                    hdu.header["CRVAL2"] = float(-chip.window.y0)
    primary = fits.PrimaryHDU(
        header=_primary_header(template, meta, len(extensions) + len(distortion), [c.window for c in chips])
    )
    return fits.HDUList([primary, *extensions, *distortion])


def write_fits(hdul: fits.HDUList, path: Path, *, stamp: str) -> None:
    """Write with CHECKSUM/DATASUM whose comment is ``stamp`` (not the wall clock): reproducible bytes."""
    for hdu in hdul:
        hdu.add_checksum(when=stamp)
    hdul.writeto(path, overwrite=True)


def write_truth(
    path: Path,
    *,
    rootname: str,
    windows: list[ChipWindow],
    extvers: list[int] | None = None,
    cr_masks: list[np.ndarray],
    cr_charges: list[np.ndarray],
    models: list[np.ndarray],
    mask_threshold_e: float,
    n_events: list[int],
    artefacts: list[np.ndarray | None] | None = None,
) -> None:
    """Write ``<rootname>_simtruth.fits``: CRMASK, CRCHARGE, MODEL per chip (EXTVER = the FLC's SCI extver).

    ``extvers`` are the chips' EXTVERs in the FLC (default: the windows' full-frame ones; a subarray's
    one chip is 1).

    With ``artefacts`` (uint8 bit masks of :mod:`crlib.simulate.artefacts`, one per chip) an
    ``ARTEFACT`` extension follows each chip's MODEL; readers of the other extensions are unaffected.
    """
    from crlib.simulate.artefacts import ARTEFACT_BITS

    primary = fits.PrimaryHDU()
    primary.header["ROOTNAME"] = rootname
    primary.header["FILETYPE"] = "SIMTRUTH"
    primary.header["CRTHRESH"] = (mask_threshold_e, "CRMASK = 1 where CR charge >= this, e-")
    hdus: list[fits.ImageHDU | fits.PrimaryHDU] = [primary]
    bits = artefacts if artefacts is not None else [None] * len(windows)
    numbers = extvers if extvers is not None else [window.sci_extver for window in windows]
    for window, extver, mask, charge, model, events, artefact in zip(
        windows, numbers, cr_masks, cr_charges, models, n_events, bits, strict=True
    ):
        planes = [
            ("CRMASK", mask, "UNITLESS"),
            ("CRCHARGE", charge, "ELECTRONS"),
            ("MODEL", model, "ELECTRONS"),
        ]
        if artefact is not None:
            planes.append(("ARTEFACT", artefact, "UNITLESS"))
        for name, data, unit in planes:
            hdu = fits.ImageHDU(data=data, name=name, ver=extver)
            hdu.header["BUNIT"] = unit
            hdu.header["LTV1"] = float(-window.x0)
            hdu.header["LTV2"] = float(-window.y0)
            hdu.header["NCREVENT"] = (events, "CR events drawn for this chip (incl. margin)")
            if name == "ARTEFACT":
                for label, bit in ARTEFACT_BITS.items():
                    hdu.header[f"BIT{bit}"] = (label, "artefact class of this bit")
            hdus.append(hdu)
    write_fits(fits.HDUList(hdus), path, stamp=f"truth of {rootname}")


def mean_dark_e(exptime_s: float, dark_rate: float) -> float:
    """Mean dark charge of an exposure (``DARKTIME`` = EXPTIME + 3.2 s flush), electrons."""
    return dark_rate * (exptime_s + 3.2) if math.isfinite(exptime_s) else 0.0
