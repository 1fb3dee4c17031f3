"""Read and check the calibrated exposures (FLC/FLT) of one visit before aligning or drizzling.

AstroDrizzle silently drops files without ``EXPTIME`` and treats data as a count *rate* unless the
SCI header says ``BUNIT='ELECTRONS'``; both mistakes produce plausible-looking but wrong CR masks,
so every input is checked here first and a bad file gets an :class:`~crlib.errors.InputDataError`
naming the file and the fix.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crlib.errors import InputDataError
from crlib.formats.flc import header_filter, rootname_from_path
from crlib.profiles import InstrumentProfile, profile_for_header

log = logging.getLogger(__name__)

#: Calibrated-product suffixes we accept, in order of preference.
PRODUCT_SUFFIXES: tuple[str, ...] = ("_flc.fits", "_flt.fits")

#: A chip with a larger share of NaN/Inf pixels is damaged (calacs never writes them; screening's
#: pixel check uses the same limit); a smaller share is flagged as bad pixels in the working copy
#: (:func:`flag_nonfinite`): one NaN anywhere makes AstroDrizzle's sky step fail for the whole
#: visit ("Not enough data points to compute statistics").
MAX_NONFINITE_FRACTION = 0.01

#: ACS/WFC3 DQ bit "data replaced by fill value": what :func:`flag_nonfinite` sets (drizzle and the
#: valid mask treat it as bad).
FILL_VALUE_DQ_BIT = 2

_REDOWNLOAD = "download it again"


@dataclass(frozen=True, slots=True)
class ExposureInfo:
    """Header facts of one calibrated exposure.

    Attributes
    ----------
    path
        The FITS file.
    rootname
        ``ipppssoo`` exposure id, lower case.
    profile
        Instrument profile matching ``INSTRUME``/``DETECTOR``.
    exptime_s
        Exposure time, seconds.
    filter
        Filter name (first non-CLEAR of ``FILTER1``/``FILTER2``, or ``FILTER``).
    sci_extvers
        EXTVER of every SCI extension present, in file order.
    chip_shape
        ``(ny, nx)`` of the SCI arrays, pixels.
    gain
        Mean of the profile's gain keywords, e-/DN.
    read_noise_e
        Mean of the profile's read-noise keywords, electrons.
    nonfinite_pixels
        NaN/Inf science pixels over all chips (see :func:`flag_nonfinite`).
    """

    path: Path
    rootname: str
    profile: InstrumentProfile
    exptime_s: float
    filter: str
    sci_extvers: tuple[int, ...]
    chip_shape: tuple[int, int]
    gain: float
    read_noise_e: float
    nonfinite_pixels: int = 0


def find_exposures(visit_dir: Path) -> list[Path]:
    """Calibrated exposure files directly inside ``visit_dir`` (FLC preferred over FLT), sorted.

    Raises
    ------
    InputDataError
        If the directory does not exist.
    """
    visit_dir = Path(visit_dir)
    if not visit_dir.is_dir():
        raise InputDataError(
            visit_dir, "visit directory does not exist", fix="pass a directory of *_flc.fits"
        )
    chosen: dict[str, Path] = {}
    for suffix in reversed(PRODUCT_SUFFIXES):
        for path in sorted(visit_dir.glob(f"*{suffix}")):
            chosen[path.name[: -len(suffix)].lower()] = path
    return [chosen[key] for key in sorted(chosen)]


def _mean_keyword(header: object, keywords: tuple[str, ...]) -> float | None:
    values = [float(header[k]) for k in keywords if k in header and float(header[k]) > 0]  # type: ignore[operator,index]
    return sum(values) / len(values) if values else None


def check_chip_pixels(
    path: Path,
    extver: int,
    sci: np.ndarray,
    dq: np.ndarray,
    *,
    max_nonfinite_fraction: float = MAX_NONFINITE_FRACTION,
) -> int:
    """Refuse a chip whose pixels no source catalog, sky estimate or driz_cr can work on.

    Parameters
    ----------
    path
        The file (named in the error).
    extver
        SCI extension version of the chip.
    sci
        float (ny, nx) science array, electrons.
    dq
        int (ny, nx) data-quality array.
    max_nonfinite_fraction
        Largest share of NaN/Inf pixels accepted.

    Returns
    -------
    int
        NaN/Inf pixels of the (accepted) chip.

    Raises
    ------
    InputDataError
        No finite pixel, more than ``max_nonfinite_fraction`` NaN/Inf pixels, no finite
        DQ-good pixel, or a constant chip (no sky noise: a zeroed or filled array).
    """
    from crlib.formats.dq import dq_good

    data = np.asarray(sci)
    finite = np.isfinite(data)
    n_finite = int(finite.sum())
    chip = f"SCI,{extver}"
    if n_finite == 0:
        raise InputDataError(
            path, f"{chip} is entirely NaN/Inf: source catalog and sky impossible", fix=_REDOWNLOAD
        )
    bad_share = 1.0 - n_finite / data.size
    if bad_share > max_nonfinite_fraction:
        raise InputDataError(
            path,
            f"{chip} has {bad_share:.1%} NaN/Inf pixels (more than {max_nonfinite_fraction:.0%}): "
            "the data are damaged",
            fix=_REDOWNLOAD,
        )
    usable = finite & dq_good(dq)
    if not usable.any():
        raise InputDataError(path, f"{chip} has no finite DQ-good pixel: nothing to measure", fix=_REDOWNLOAD)
    low = float(np.min(data, where=usable, initial=np.inf))
    high = float(np.max(data, where=usable, initial=-np.inf))
    if low == high:
        raise InputDataError(
            path,
            f"{chip} is constant (every good pixel {low:g}): no sky, no noise, no sources",
            fix=_REDOWNLOAD,
        )
    return data.size - n_finite


def read_exposure_info(
    path: Path, *, profile: InstrumentProfile | None = None, check_pixels: bool = True
) -> ExposureInfo:
    """Open one exposure and check everything AstroDrizzle and the truth stage rely on.

    Parameters
    ----------
    path
        Calibrated ``*_flc.fits`` / ``*_flt.fits`` file.
    profile
        Expected instrument profile; ``None`` takes it from ``INSTRUME``/``DETECTOR``.
    check_pixels
        Also refuse chips whose pixels nothing can be measured on (see :func:`check_chip_pixels`).

    Raises
    ------
    InputDataError
        Unreadable/truncated file, wrong instrument, missing SCI/DQ extension, ``EXPTIME`` missing
        or not positive, ``BUNIT`` other than electrons, all-NaN, mostly-NaN or constant chip.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdul.verify("silentfix")
            primary = hdul[0].header
            instrume = str(primary.get("INSTRUME", "")).strip()
            detector = str(primary.get("DETECTOR", "")).strip()
            found = profile_for_header(instrume, detector)
            if found is None or (profile is not None and found.name != profile.name):
                expected = f"{profile.instrume}/{profile.detector}" if profile else "a known profile"
                raise InputDataError(
                    path,
                    f"instrument {instrume or '?'}/{detector or '?'} is not {expected}",
                    fix="drizzle only exposures of one instrument profile together",
                )
            exptime = primary.get("EXPTIME")
            if exptime is None or not float(exptime) > 0:
                raise InputDataError(
                    path,
                    f"EXPTIME is {exptime!r}",
                    fix="AstroDrizzle silently drops such files; fix the header",
                )
            extvers = tuple(
                int(h.header.get("EXTVER", 1)) for h in hdul if h.header.get("EXTNAME", "").upper() == "SCI"
            )
            if not extvers:
                raise InputDataError(path, "no SCI extension", fix="pass a calibrated FLC/FLT file")
            shape: tuple[int, int] | None = None
            nonfinite = 0
            for extver in extvers:
                sci = hdul["SCI", extver]
                bunit = str(sci.header.get("BUNIT", "")).strip().upper()
                if bunit not in ("ELECTRONS", "ELECTRON"):
                    raise InputDataError(
                        path,
                        f"SCI,{extver} BUNIT is {bunit!r}, not ELECTRONS",
                        fix="AstroDrizzle would treat the data as a rate; use electron (FLC) files",
                    )
                if ("DQ", extver) not in hdul:
                    raise InputDataError(
                        path, f"missing DQ,{extver} extension", fix="pass a calibrated FLC/FLT file"
                    )
                if sci.data is None or sci.data.ndim != 2:
                    raise InputDataError(path, f"SCI,{extver} holds no 2-D image", fix="re-download the file")
                shape = (int(sci.data.shape[0]), int(sci.data.shape[1]))
                if check_pixels:
                    nonfinite += check_chip_pixels(path, extver, sci.data, hdul["DQ", extver].data)
                else:
                    nonfinite += int(np.count_nonzero(~np.isfinite(sci.data)))
            gain = _mean_keyword(primary, found.gain_keywords) or 1.0
            read_noise = _mean_keyword(primary, found.readnoise_keywords) or 0.0
            filt = header_filter(primary)
            rootname = str(primary.get("ROOTNAME", rootname_from_path(path))).strip().lower()
    except InputDataError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise InputDataError(
            path, f"cannot read FITS file ({exc})", fix="re-download or remove the file"
        ) from None
    assert shape is not None
    return ExposureInfo(
        path=path,
        rootname=rootname,
        profile=found,
        exptime_s=float(exptime),
        filter=filt,
        sci_extvers=extvers,
        chip_shape=shape,
        gain=gain,
        read_noise_e=read_noise,
        nonfinite_pixels=nonfinite,
    )


def flag_nonfinite(path: Path) -> dict[int, int]:
    """Turn NaN/Inf science pixels into flagged bad pixels, in place (working copies only).

    AstroDrizzle's sky step fails on a single NaN; such pixels are set to the chip's median (so a
    sky statistic that ignores DQ is not pulled) and get DQ bit :data:`FILL_VALUE_DQ_BIT`, which
    drizzle and the valid mask treat as bad.

    Returns
    -------
    dict
        ``{sci_extver: pixels flagged}`` for chips that had any.
    """
    from astropy.io import fits

    flagged: dict[int, int] = {}
    with fits.open(path, mode="update", memmap=False) as hdul:
        for hdu in hdul:
            if hdu.header.get("EXTNAME", "").upper() != "SCI" or hdu.data is None:
                continue
            nonfinite = ~np.isfinite(hdu.data)
            if not nonfinite.any():
                continue
            extver = int(hdu.header.get("EXTVER", 1))
            finite = hdu.data[~nonfinite]
            hdu.data[nonfinite] = float(np.median(finite)) if finite.size else 0.0
            hdul["DQ", extver].data[nonfinite] |= FILL_VALUE_DQ_BIT
            flagged[extver] = int(nonfinite.sum())
    if flagged:
        log.warning("%s: NaN/Inf pixels per chip %s flagged as bad (DQ %d)", path, flagged, FILL_VALUE_DQ_BIT)
    return flagged


def copy_to_work_dir(paths: list[Path], work_dir: Path) -> list[Path]:
    """Copy exposures into ``work_dir`` (alignment and AstroDrizzle modify their inputs).

    The copies carry no ``CHECKSUM``/``DATASUM`` (:func:`_drop_checksums`); the originals keep theirs.

    Returns
    -------
    list of Path
        The copies, in the same order.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        target = work_dir / Path(path).name
        shutil.copyfile(path, target)
        _drop_checksums(target)
        copies.append(target)
    return copies


def _drop_checksums(copy: Path) -> None:
    """Remove the ``CHECKSUM`` and ``DATASUM`` cards of an uncompressed working copy, in place.

    astropy recomputes both over every HDU whose header or data changed, each time a file opened
    for update is written back: drizzlepac's DQ reset, its sky values and the alignment's WCS all
    update the copies, which cost ~1 s of checksums on one core per full-size visit of 3 exposures.
    Only header blocks are rewritten (0.02 s a file); the pixels are untouched. A file astropy cannot
    open is left as it is, for the read step to report.
    """
    from astropy.io import fits

    if not copy.name.endswith(".fits"):
        return
    try:
        hdul = fits.open(copy, mode="update", checksum="remove")
        try:
            for hdu in hdul:
                hdu.header.remove("CHECKSUM", ignore_missing=True)
                hdu.header.remove("DATASUM", ignore_missing=True)
        finally:
            hdul.close(output_verify="ignore")
    except (OSError, ValueError) as exc:
        log.debug("%s: checksums left in place (%s)", copy, exc)
