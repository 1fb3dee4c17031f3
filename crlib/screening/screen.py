"""Screen calibrated exposures by their headers; group verdicts into drizzle sets.

Only headers are read (astropy's lazy HDU loading: the primary header and the extension headers
up to the last SCI extension the profile needs), never pixel data, so screening a thousand files
takes seconds. A file that cannot be read, is truncated, or lacks an extension or a required
keyword is *rejected* with a reason naming the file and what is missing; it never stops a batch.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crlib.records import ScreeningReason, ScreeningVerdict
from crlib.screening.rules import TESTS, HeaderRule, ScreeningProfile, get_screening_profile

log = logging.getLogger(__name__)

#: FITS files are made of 2880-byte blocks; any other size means a truncated or damaged file.
FITS_BLOCK = 2880

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
        Header of the first SCI extension (empty mapping if none).
    n_sci
        SCI extensions found.
    """

    primary: Any
    sci: Any
    n_sci: int


def _reject(rule: str, keyword: str, value: Any, message: str) -> ScreeningReason:
    return ScreeningReason(rule=rule, keyword=keyword, value=value, message=message, severity="reject")


def read_snapshot(path: Path, *, n_sci: int) -> tuple[HeaderSnapshot | None, list[ScreeningReason]]:
    """Read the primary header and up to ``n_sci`` SCI extension headers of a FITS file.

    Returns
    -------
    snapshot, problems
        ``snapshot`` is ``None`` when the file cannot be screened at all; ``problems`` are
        reject reasons (unreadable, truncated, missing SCI extensions).
    """
    from astropy.io import fits

    problems: list[ScreeningReason] = []
    if not path.is_file():
        return None, [_reject("file.unreadable", "", None, f"{path}: file does not exist")]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, lazy_load_hdus=True, memmap=False) as hdus:
                primary = hdus[0].header
                sci_headers: list[Any] = []
                index = 1
                while len(sci_headers) < n_sci:
                    try:
                        hdu = hdus[index]
                    except IndexError:
                        break
                    if hdu.name == "SCI":
                        sci_headers.append(hdu.header)
                    index += 1
                last = hdus[index - 1].fileinfo() or {"datLoc": 0, "datSpan": 0}
                data_end = int(last["datLoc"]) + int(last["datSpan"])
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError... for corrupt files
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, [
            _reject("file.unreadable", "", None, f"{path}: not a readable FITS file ({first_line})")
        ]
    size = path.stat().st_size
    compressed = path.name.lower().endswith((".gz", ".bz2", ".zip"))
    if not compressed and size % FITS_BLOCK:
        problems.append(
            _reject(
                "file.truncated",
                "",
                size,
                f"{path}: truncated: {size} bytes is not a whole number of {FITS_BLOCK}-byte "
                "FITS blocks (download it again)",
            )
        )
    elif not compressed and data_end > size:
        problems.append(
            _reject(
                "file.truncated",
                "",
                size,
                f"{path}: truncated: {size} bytes on disk, the headers describe {data_end} "
                "(download it again)",
            )
        )
    else:
        for warning in caught:
            text = str(warning.message)
            if "truncated" in text.lower():
                problems.append(_reject("file.truncated", "", None, f"{path}: {text} (download it again)"))
                break
    if not sci_headers:
        problems.append(_reject("file.missing_extension", "SCI", None, f"{path}: no SCI extension"))
    elif len(sci_headers) < n_sci and not primary.get("SUBARRAY", False):
        problems.append(
            _reject(
                "file.missing_extension",
                "SCI",
                len(sci_headers),
                f"{path}: full-frame exposure has {len(sci_headers)} SCI extension(s), expected {n_sci}",
            )
        )
    return HeaderSnapshot(primary, sci_headers[0] if sci_headers else {}, len(sci_headers)), problems


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
            _reject("profile.instrument", missing, None, f"{path}: primary header lacks {missing}")
        )
    elif (str(instrume).strip().upper(), str(detector).strip().upper()) != (
        expected.instrume,
        expected.detector,
    ):
        reasons.append(
            _reject(
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
                    _reject(rule.id, keyword, None, f"{path}: keyword {keyword} missing from the {where}")
                )
                continue
            if rule.default is None:
                continue
            value = rule.default
        try:
            fires = TESTS[rule.test](value, rule.params)
        except (TypeError, ValueError):
            reasons.append(
                _reject(
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
    return path.name.split("_")[0].split(".")[0].lower()


def screen_file(path: Path | str, *, profile: ScreeningProfile | str = "acs_wfc") -> ScreeningVerdict:
    """Screen one calibrated exposure by its headers.

    Parameters
    ----------
    path
        FLC/FLT file (``.fits`` or ``.fits.gz``).
    profile
        Screening profile or its name.

    Returns
    -------
    ScreeningVerdict
        ``accept`` unless a reject reason fired; ``usable_for_training`` is False for rejected
        exposures and those a training rule excludes. Never raises for bad files.
    """
    path = Path(path)
    chosen = get_screening_profile(profile) if isinstance(profile, str) else profile
    snapshot, reasons = read_snapshot(path, n_sci=len(chosen.instrument.chips))
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


def screen_files(
    paths: Iterable[Path | str], *, profile: ScreeningProfile | str = "acs_wfc"
) -> list[ScreeningVerdict]:
    """Screen many files (one verdict each, in input order)."""
    return [screen_file(path, profile=profile) for path in paths]


@dataclass(frozen=True, slots=True)
class ScreeningSet:
    """Exposures of one (visit, detector, filter) set after screening.

    Attributes
    ----------
    visit, detector, filter
        The set's key (``detector`` is ``INSTRUME/DETECTOR``, e.g. ``ACS/WFC``).
    accepted, rejected
        Rootnames by verdict.
    gets_truth
        Whether drizzle ground truth can be made (enough accepted exposures).
    note
        Why not, when ``gets_truth`` is False.
    """

    visit: str
    detector: str
    filter: str
    accepted: tuple[str, ...]
    rejected: tuple[str, ...]
    gets_truth: bool
    note: str | None = None


def group_verdicts(verdicts: Iterable[ScreeningVerdict], *, min_exposures: int = 2) -> list[ScreeningSet]:
    """Group verdicts into (visit, detector, filter) sets and say which get drizzle truth.

    Every accepted exposure still gets model inference; only sets with at least
    ``min_exposures`` accepted exposures get drizzle ground truth (driz_cr needs overlap).
    """
    groups: dict[tuple[str, str, str], list[ScreeningVerdict]] = defaultdict(list)
    for verdict in verdicts:
        summary = verdict.header_summary
        detector = f"{summary.get('instrument') or '?'}/{summary.get('detector') or '?'}"
        groups[(verdict.rootname[:6], detector, str(summary.get("filter") or "?"))].append(verdict)
    sets: list[ScreeningSet] = []
    for (visit, detector, filter_name), members in sorted(groups.items()):
        accepted = tuple(sorted(v.rootname for v in members if v.verdict == "accept"))
        rejected = tuple(sorted(v.rootname for v in members if v.verdict == "reject"))
        gets_truth = len(accepted) >= min_exposures
        note = (
            None
            if gets_truth
            else (
                f"{len(accepted)} accepted exposure(s) < {min_exposures}: "
                "model inference only, no drizzle truth"
            )
        )
        sets.append(ScreeningSet(visit, detector, filter_name, accepted, rejected, gets_truth, note))
    return sets
