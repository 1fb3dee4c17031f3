"""Screen calibrated exposures: headers, extension structure, a cheap pixel check, duplicates.

Headers are read lazily (astropy's lazy HDU loading; every extension header, no pixel data) to
find the file's chips (the EXTVERs of its SCI extensions: never assumed from the profile) and to
apply the profile's rules; then a strided subsample of each SCI array is read (:func:`check_data`)
and judged (:mod:`crlib.screening.datacheck`, on by default, ``data_check=False`` to skip). A file that
cannot be read, is not FITS, is truncated, lacks an extension, or holds damaged pixels is
*rejected* with a one-line reason naming the file, the problem and the fix; it never stops a
batch. Screening a batch of files (duplicates, damage, drizzle sets) is :mod:`crlib.screening.batch`.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import warnings
import zlib
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlib.formats.flc import rootname_from_path
from crlib.records import ScreeningReason, ScreeningVerdict
from crlib.screening.datacheck import (
    DEFAULT_MAX_NONFINITE_FRACTION,
    DEFAULT_MAX_ROWS,
    FIX_DOWNLOAD,
    ChipStats,
    chip_stats,
    judge_chip,
    row_step,
)
from crlib.screening.rules import TESTS, HeaderRule, ScreeningProfile, get_screening_profile

log = logging.getLogger(__name__)

#: FITS files are made of 2880-byte blocks; any other size means a truncated or damaged file.
FITS_BLOCK = 2880

#: Every chip (SCI EXTVER) of a calibrated FLC/FLT has these three extensions.
CHIP_EXTENSIONS = ("SCI", "ERR", "DQ")

#: Keywords copied into ``ScreeningVerdict.header_summary`` (for the results database).
SUMMARY_KEYWORDS: dict[str, tuple[str, str]] = {
    "instrument": ("primary", "INSTRUME"),
    "detector": ("primary", "DETECTOR"),
    "exptime": ("primary", "EXPTIME"),
    "date_obs": ("primary", "DATE-OBS"),
    "time_obs": ("primary", "TIME-OBS"),
    "expstart": ("primary", "EXPSTART"),
    "targname": ("primary", "TARGNAME"),
    "proposid": ("primary", "PROPOSID"),
    "asn_id": ("primary", "ASN_ID"),
    "subarray": ("primary", "SUBARRAY"),
    "wcsname": ("sci", "WCSNAME"),
    "bunit": ("sci", "BUNIT"),
}


@dataclass(frozen=True, slots=True)
class HeaderSnapshot:
    """The headers screening needs from one file.

    Attributes
    ----------
    primary
        Primary header (an astropy ``Header`` or any mapping with ``get``).
    sci
        Header of the first SCI extension in the file (empty mapping if none).
    n_sci
        SCI extensions found.
    extvers
        EXTVERs present per extension name, for ``SCI``, ``ERR`` and ``DQ`` (sorted; a name
        without extensions is absent).
    """

    primary: Any
    sci: Any
    n_sci: int
    extvers: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def sci_extvers(self) -> tuple[int, ...]:
        """EXTVERs of the SCI extensions present (the file's chips)."""
        return tuple(self.extvers.get("SCI", ()))


_MAGIC: dict[bytes, str] = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"PK\x03\x04": "zip"}


def reject_reason(rule: str, keyword: str, value: Any, message: str) -> ScreeningReason:
    return ScreeningReason(rule=rule, keyword=keyword, value=value, message=message, severity="reject")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def compression(path: Path) -> str | None:
    """Whole-file compression of ``path`` from its first bytes: ``gzip``, ``bzip2``, ``zip`` or None."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def read_start(path: Path, n_bytes: int = 80) -> bytes:
    """The first ``n_bytes`` of the (decompressed, for gzip/bzip2) file.

    Raises
    ------
    OSError, EOFError
        If the file or its compressed stream cannot be read.
    """
    kind = compression(path)
    if kind == "gzip":
        with gzip.open(path, "rb") as stream:
            return stream.read(n_bytes)
    if kind == "bzip2":
        with bz2.open(path, "rb") as stream:
            return stream.read(n_bytes)
    with path.open("rb") as handle:
        return handle.read(n_bytes)


def sample_sci(hdu: Any, *, max_rows: int = DEFAULT_MAX_ROWS, whole: bool = False) -> tuple[Any, int]:
    """Read every ``row_step``-th row of an image HDU's data.

    Parameters
    ----------
    hdu
        An astropy image HDU (``ImageHDU``, ``CompImageHDU``) of shape ``(ny, nx)``.
    max_rows
        At most this many rows are read.
    whole
        Read the whole array and stride it in memory (for gzip/bzip2-compressed files, where
        ``section`` would decompress the stream once per row).

    Returns
    -------
    sample, rows
        The sampled rows (``(rows, nx)``; ``None`` when the HDU has no data) and their count.
    """
    shape = tuple(int(n) for n in hdu.shape) if hdu.header.get("NAXIS", 0) else ()
    if not shape or 0 in shape:
        return None, 0
    step = row_step(shape[0], max_rows=max_rows)
    sample = hdu.data[::step] if whole else hdu.section[::step]
    return np.asarray(sample), int(sample.shape[0])


def _not_fits(path: Path) -> ScreeningReason | None:
    """A reject reason when the file is empty or does not start with a SIMPLE card."""
    if path.stat().st_size == 0:
        return reject_reason("file.unreadable", "", 0, f"{path}: empty file (0 bytes): {FIX_DOWNLOAD}")
    try:
        start = read_start(path)
    except (OSError, EOFError) as exc:
        kind = compression(path) or "file"
        return reject_reason(
            "file.unreadable", "", None, f"{path}: damaged {kind} stream ({_first_line(exc)}): {FIX_DOWNLOAD}"
        )
    if compression(path) == "zip" or start.startswith(b"SIMPLE"):
        return None
    return reject_reason(
        "file.unreadable", "", None, f"{path}: not a FITS file (no SIMPLE card at the start): {FIX_DOWNLOAD}"
    )


def check_data(
    path: Path | str,
    *,
    extvers: Collection[int] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_nonfinite_fraction: float = DEFAULT_MAX_NONFINITE_FRACTION,
) -> list[ScreeningReason]:
    """Check the SCI pixels of one FITS file; never raises for a bad file.

    Parameters
    ----------
    path
        FLC/FLT file (``.fits``, ``.fits.gz``).
    extvers
        SCI EXTVERs to check; default: every SCI extension.
    max_rows
        Rows sampled per chip (evenly strided).
    max_nonfinite_fraction
        Largest acceptable fraction of NaN/Inf pixels per chip.

    Returns
    -------
    list of ScreeningReason
        One reject reason per bad chip (rules ``data.empty``, ``data.all_nan``,
        ``data.nonfinite``, ``data.constant``; the chip as ``keyword``, e.g. ``SCI,1``), or one
        ``file.truncated``/``file.unreadable`` reason if the pixels cannot be read. Empty when
        every chip looks like real data.
    """
    from astropy.io import fits

    path = Path(path)
    reasons: list[ScreeningReason] = []
    wanted = None if extvers is None else set(extvers)
    try:
        whole = compression(path) is not None
        with fits.open(path, lazy_load_hdus=True, memmap=False) as hdus:
            for hdu in hdus:
                if hdu.name != "SCI" or (wanted is not None and hdu.ver not in wanted):
                    continue
                sample, rows = sample_sci(hdu, max_rows=max_rows, whole=whole)
                shape = tuple(int(n) for n in hdu.shape) if hdu.header.get("NAXIS", 0) else ()
                stats = (
                    chip_stats(sample, extver=hdu.ver, shape=shape, rows_sampled=rows)
                    if sample is not None
                    else ChipStats(hdu.ver, shape, 0, 0, 0, None, None)
                )
                problem = judge_chip(stats, max_nonfinite_fraction=max_nonfinite_fraction)
                if problem is not None:
                    rule, text = problem
                    value = round(stats.nonfinite_fraction, 6) if rule == "data.nonfinite" else None
                    reasons.append(
                        reject_reason(rule, f"SCI,{hdu.ver}", value, f"{path}: {text}: {FIX_DOWNLOAD}")
                    )
    except EOFError as exc:  # a compressed stream that ends early
        return [
            reject_reason(
                "file.truncated", "", None, f"{path}: truncated: {_first_line(exc)}: {FIX_DOWNLOAD}"
            )
        ]
    except Exception as exc:  # astropy/numpy raise many types for damaged data
        log.debug("pixel check of %s failed", path, exc_info=True)
        return [
            reject_reason(
                "file.unreadable",
                "",
                None,
                f"{path}: SCI pixel data cannot be read ({_first_line(exc)}): {FIX_DOWNLOAD}",
            )
        ]
    return reasons


def _missing_extensions(
    path: Path, extvers: Mapping[str, tuple[int, ...]], *, n_sci: int, subarray: bool
) -> ScreeningReason | None:
    """One reject reason naming every missing SCI/ERR/DQ extension, or ``None``."""
    sci = set(extvers.get("SCI", ()))
    if not sci:
        return reject_reason("file.missing_extension", "SCI", 0, f"{path}: no SCI extension: {FIX_DOWNLOAD}")
    chips = sci | set(extvers.get("ERR", ())) | set(extvers.get("DQ", ()))
    missing = [
        f"{name},{extver}"
        for extver in sorted(chips)
        for name in CHIP_EXTENSIONS
        if extver not in extvers.get(name, ())
    ]
    if len(sci) < n_sci and not subarray:
        absent = [f"SCI,{extver}" for extver in range(1, n_sci + 1) if extver not in sci]
        missing = [*dict.fromkeys([*absent, *missing])]
        return reject_reason(
            "file.missing_extension",
            " ".join(missing)[:64],
            len(sci),
            f"{path}: full-frame exposure has {len(sci)} SCI extension(s), expected {n_sci} "
            f"(missing {', '.join(missing)}): {FIX_DOWNLOAD}",
        )
    if missing:
        return reject_reason(
            "file.missing_extension",
            " ".join(missing)[:64],
            None,
            f"{path}: missing extension(s) {', '.join(missing)} (every SCI chip needs its ERR and DQ): "
            f"{FIX_DOWNLOAD}",
        )
    return None


def _is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().upper() in {"T", "TRUE", "Y", "YES"}
    return bool(value)


def read_snapshot(path: Path, *, n_sci: int) -> tuple[HeaderSnapshot | None, list[ScreeningReason]]:
    """Read the primary header and every extension header of a FITS file (no pixel data).

    Parameters
    ----------
    path
        FITS file.
    n_sci
        SCI extensions (chips) a full-frame exposure of the profile has; a subarray
        (``SUBARRAY=T``) may have fewer.

    Returns
    -------
    snapshot, problems
        ``snapshot`` is ``None`` when the file cannot be screened at all; ``problems`` are
        reject reasons (unreadable, not FITS, truncated, missing SCI/ERR/DQ extensions), each
        one line naming the file, the problem and the fix.
    """
    from astropy.io import fits

    problems: list[ScreeningReason] = []
    if not path.is_file():
        return None, [
            reject_reason("file.unreadable", "", None, f"{path}: file does not exist: {FIX_DOWNLOAD}")
        ]
    try:
        not_fits = _not_fits(path)
        if not_fits is not None:
            return None, [not_fits]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, lazy_load_hdus=True, memmap=False) as hdus:
                primary = hdus[0].header
                sci_header: Any = None
                found: dict[str, list[int]] = defaultdict(list)
                index = 1
                while True:
                    try:
                        hdu = hdus[index]
                    except IndexError:
                        break
                    if hdu.name in CHIP_EXTENSIONS:
                        found[hdu.name].append(int(hdu.ver))
                        if hdu.name == "SCI" and sci_header is None:
                            sci_header = hdu.header
                    index += 1
                last = hdus[index - 1].fileinfo() or {"datLoc": 0, "datSpan": 0}
                data_end = int(last["datLoc"]) + int(last["datSpan"])
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError... for corrupt files
        return None, [
            reject_reason(
                "file.unreadable",
                "",
                None,
                f"{path}: not a readable FITS file ({_first_line(exc)}): {FIX_DOWNLOAD}",
            )
        ]
    size = path.stat().st_size
    kind = compression(path)
    compressed = kind is not None
    n_extensions = index - 1
    nextend = primary.get("NEXTEND")
    gzip_problem = _gzip_problem(path, data_end) if kind == "gzip" else None
    if gzip_problem is not None:
        problems.append(reject_reason("file.truncated", "", None, f"{path}: {gzip_problem}: {FIX_DOWNLOAD}"))
    elif not compressed and size % FITS_BLOCK:
        problems.append(
            reject_reason(
                "file.truncated",
                "",
                size,
                f"{path}: truncated: {size} bytes is not a whole number of {FITS_BLOCK}-byte "
                f"FITS blocks: {FIX_DOWNLOAD}",
            )
        )
    elif not compressed and data_end > size:
        problems.append(
            reject_reason(
                "file.truncated",
                "",
                size,
                f"{path}: truncated: {size} bytes on disk, the headers describe {data_end}: {FIX_DOWNLOAD}",
            )
        )
    elif isinstance(nextend, int) and not isinstance(nextend, bool) and n_extensions < nextend:
        problems.append(
            reject_reason(
                "file.truncated",
                "NEXTEND",
                n_extensions,
                f"{path}: truncated: the file ends after {n_extensions} extension(s), the primary "
                f"header lists NEXTEND={nextend}: {FIX_DOWNLOAD}",
            )
        )
    else:
        for warning in caught:
            text = str(warning.message)
            if "truncated" in text.lower():
                problems.append(
                    reject_reason(
                        "file.truncated", "", None, f"{path}: {_first_line_of(text)}: {FIX_DOWNLOAD}"
                    )
                )
                break
    extvers = {name: tuple(sorted(set(values))) for name, values in found.items()}
    missing = _missing_extensions(
        path, extvers, n_sci=n_sci, subarray=_is_true(primary.get("SUBARRAY", False))
    )
    if missing is not None:
        problems.append(missing)
    sci = sci_header if sci_header is not None else {}
    return HeaderSnapshot(primary, sci, len(extvers.get("SCI", ())), extvers), problems


def _gzip_problem(path: Path, data_end: int) -> str | None:
    """Why a gzip file is incomplete, or ``None``.

    A gzip stream ends with its uncompressed size (mod 2**32); when that matches the end of the
    last HDU the file is complete (no decompression needed). Otherwise the stream is decompressed
    to its end to tell a cut-off download from a legitimate multi-member file.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(-4, 2)
            isize = int.from_bytes(handle.read(4), "little")
        if isize == data_end % 2**32:
            return None
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except EOFError:
        return "truncated: the gzip stream ends early"
    except (OSError, zlib.error) as exc:
        return f"damaged gzip stream ({_first_line(exc)})"
    return None


def _first_line_of(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _filters(primary: Mapping[str, Any], keywords: tuple[str, ...]) -> str | None:
    """drizzlepac's filter string: non-blank filter keywords, upper case, joined by ``_``."""
    values = [primary.get(keyword) for keyword in keywords]
    if all(value is None for value in values):
        return None
    return "_".join(str(v).strip().upper() for v in values if v is not None and str(v).strip())


def science_filter(filters: str) -> str:
    """The filter that shapes the bandpass: ``F606W_CLEAR2L`` -> ``F606W`` (``CLEAR`` if none)."""
    items = [item for item in filters.split("_") if item and not item.startswith("CLEAR")]
    return "_".join(items) if items else "CLEAR"


def _value(snapshot: HeaderSnapshot, rule: HeaderRule, profile: ScreeningProfile) -> Any:
    if rule.keyword == "FILTERS":
        return _filters(snapshot.primary, profile.filter_keywords)
    header = snapshot.primary if rule.location == "primary" else snapshot.sci
    return header.get(rule.keyword)


def evaluate_rules(
    snapshot: HeaderSnapshot, profile: ScreeningProfile, *, path: Path
) -> list[ScreeningReason]:
    """Apply the profile's instrument match and rules to one file's headers."""
    reasons: list[ScreeningReason] = []
    instrume = snapshot.primary.get("INSTRUME")
    detector = snapshot.primary.get("DETECTOR")
    expected = profile.instrument
    if instrume is None or detector is None:
        missing = "INSTRUME" if instrume is None else "DETECTOR"
        reasons.append(
            reject_reason("profile.instrument", missing, None, f"{path}: primary header lacks {missing}")
        )
    elif (str(instrume).strip().upper(), str(detector).strip().upper()) != (
        expected.instrume,
        expected.detector,
    ):
        reasons.append(
            reject_reason(
                "profile.instrument",
                "INSTRUME/DETECTOR",
                f"{instrume}/{detector}",
                f"{instrume}/{detector} does not match the {expected.mast_instrument_name} "
                f"profile (choose the matching --instrument)",
            )
        )
    for rule in profile.rules:
        if rule.location == "sci" and snapshot.n_sci == 0:
            continue  # already rejected for the missing extension
        value = _value(snapshot, rule, profile)
        where = "primary header" if rule.location == "primary" else "SCI header"
        if value is None:
            if rule.required:
                keyword = "/".join(profile.filter_keywords) if rule.keyword == "FILTERS" else rule.keyword
                reasons.append(
                    reject_reason(
                        rule.id, keyword, None, f"{path}: keyword {keyword} missing from the {where}"
                    )
                )
                continue
            if rule.default is None:
                continue
            value = rule.default
        try:
            fires = TESTS[rule.test](value, rule.params)
        except (TypeError, ValueError):
            reasons.append(
                reject_reason(
                    rule.id,
                    rule.keyword,
                    value,
                    f"{path}: {rule.keyword}={value!r} in the {where} is not a valid value",
                )
            )
            continue
        if fires:
            severity = "info" if rule.effect == "not_for_training" else rule.effect
            reasons.append(
                ScreeningReason(
                    rule=rule.id,
                    keyword=rule.keyword,
                    value=value,
                    message=rule.reason.format(value=value),
                    severity=severity,
                )
            )
    return reasons


def _summary(snapshot: HeaderSnapshot | None, profile: ScreeningProfile) -> dict[str, Any]:
    if snapshot is None:
        return {}
    summary: dict[str, Any] = {}
    for name, (location, keyword) in SUMMARY_KEYWORDS.items():
        header = snapshot.primary if location == "primary" else snapshot.sci
        value = header.get(keyword)
        summary[name] = value.strip() if isinstance(value, str) else value
    filters = _filters(snapshot.primary, profile.filter_keywords)
    summary["filters"] = filters
    summary["filter"] = science_filter(filters) if filters is not None else None
    summary["n_sci"] = snapshot.n_sci
    return summary


def _rootname(path: Path, snapshot: HeaderSnapshot | None) -> str:
    value = snapshot.primary.get("ROOTNAME") if snapshot is not None else None
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return rootname_from_path(path)


def screen_file(
    path: Path | str, *, profile: ScreeningProfile | str = "acs_wfc", data_check: bool = True
) -> ScreeningVerdict:
    """Screen one calibrated exposure: structure, headers and (by default) its SCI pixels.

    Parameters
    ----------
    path
        FLC/FLT file (``.fits`` or ``.fits.gz``).
    profile
        Screening profile or its name.
    data_check
        Sample every SCI array for damage (all NaN, more than 1% NaN/Inf, constant, empty;
        :mod:`crlib.screening.datacheck`, ~10 ms per full-size uncompressed file). ``False``
        reads headers only.

    Returns
    -------
    ScreeningVerdict
        ``accept`` unless a reject reason fired; ``usable_for_training`` is False for rejected
        exposures and those a training rule excludes. Never raises for bad files.
    """
    path = Path(path)
    chosen = get_screening_profile(profile) if isinstance(profile, str) else profile
    snapshot, reasons = read_snapshot(path, n_sci=len(chosen.instrument.chips))
    # pixels of a file cut inside its data cannot be read; one cut after whole extensions
    # (NEXTEND promises more) still has readable chips, so their damage is reported too
    unreadable = any(
        r.rule == "file.unreadable" or (r.rule == "file.truncated" and r.keyword != "NEXTEND")
        for r in reasons
    )
    if data_check and snapshot is not None and snapshot.n_sci and not unreadable:
        reasons += check_data(path, extvers=snapshot.sci_extvers)
    if snapshot is not None:
        reasons += evaluate_rules(snapshot, chosen, path=path)
    rejected = any(reason.severity == "reject" for reason in reasons)
    not_for_training = {rule.id for rule in chosen.rules if rule.effect == "not_for_training"}
    usable = not rejected and not any(reason.rule in not_for_training for reason in reasons)
    verdict = ScreeningVerdict(
        file=str(path),
        rootname=_rootname(path, snapshot),
        verdict="reject" if rejected else "accept",
        usable_for_training=usable,
        reasons=tuple(reasons),
        header_summary=_summary(snapshot, chosen),
    )
    if rejected:
        log.info(
            "%s rejected: %s", path.name, "; ".join(r.message for r in reasons if r.severity == "reject")
        )
    return verdict
