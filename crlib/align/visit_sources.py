"""Source catalogs of a visit's exposures, measured in parallel, with per-exposure problems returned.

The read step of :mod:`crlib.align.catalogs`: :func:`chip_catalog_of` opens one exposure and hands
one chip's SCI and DQ arrays to :func:`~crlib.align.catalogs.chip_catalog`; :func:`visit_catalogs`
measures every chip of a visit in threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crlib.align.catalogs import CatalogOptions, chip_catalog, strict_sources
from crlib.align.options import AlignOptions
from crlib.config import worker_count
from crlib.errors import InputDataError
from crlib.formats.flc import chip_dq, sci_extensions
from crlib.profiles import InstrumentProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VisitCatalogs:
    """Source catalogs of a visit's exposures, and the exposures whose data defeat them.

    Attributes
    ----------
    catalogs
        ``{path: {sci_extver: Table}}`` of every exposure that could be measured.
    failures
        ``{path: InputDataError}``: unusable pixels (all-NaN, mostly NaN or constant chip, photutils
        refusing them) or no source at all while other exposures of the visit have plenty.
    strict
        ``{path: {sci_extver: Table}}``: the sources of ``catalogs`` that pass the strict size test
        (:func:`~crlib.align.catalogs.strict_sources` with the options' ``catalog``), the ones the
        first relative fit matches.
    """

    catalogs: dict[Path, dict[int, Any]]
    failures: dict[Path, InputDataError]
    strict: dict[Path, dict[int, Any]]


def _open(path: Path) -> Any:
    from astropy.io import fits

    try:
        return fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise InputDataError(path, f"cannot read FITS file ({exc})", fix="download it again") from None


def exposure_extvers(path: Path) -> list[int]:
    """SCI extension versions of one exposure, in file order (headers only).

    Raises
    ------
    InputDataError
        The file cannot be read as FITS; names the file.
    """
    with _open(path) as hdul:
        return [extver for extver, _ in sci_extensions(hdul)]


def chip_catalog_of(
    path: Path, extver: int, *, profile: InstrumentProfile, options: CatalogOptions | None = None
) -> object:
    """Read step of one chip: its SCI and DQ arrays from ``path``, measured by
    :func:`~crlib.align.catalogs.chip_catalog`.

    Raises
    ------
    InputDataError
        As :func:`exposure_catalogs`; names file and chip.
    """
    with _open(path) as hdul:
        hdu = dict(sci_extensions(hdul)).get(extver)
        dq = chip_dq(hdul, extver)
        if hdu is None or hdu.data is None or dq is None:
            raise InputDataError(
                path, f"SCI,{extver} has no image or no DQ,{extver}", fix="pass a calibrated FLC/FLT file"
            )
        return chip_catalog(path, extver, hdu.data, dq, profile=profile, options=options)


def exposure_catalogs(
    path: Path, *, profile: InstrumentProfile, options: CatalogOptions | None = None
) -> dict[int, object]:
    """Source catalog of every chip of one exposure, ``{sci_extver: Table}``.

    The chips are read one at a time, in file order (SCI and DQ only), and measured by
    :func:`~crlib.align.catalogs.chip_catalog`.

    Raises
    ------
    InputDataError
        The file cannot be read, a chip lacks its image or DQ, its pixels fail
        :func:`~crlib.formats.exposures.check_chip_pixels` (all-NaN, mostly NaN, constant), or
        photutils refuses its pixels; names file and chip.
    """
    return {
        extver: chip_catalog_of(path, extver, profile=profile, options=options)
        for extver in exposure_extvers(path)
    }


def visit_catalogs(
    exposures: Sequence[Path], *, profile: InstrumentProfile, options: AlignOptions | None = None
) -> VisitCatalogs:
    """Source catalogs of every exposure, with per-exposure data problems returned, not raised.

    An exposure with no source on any chip while at least two others of the visit have
    ``min_sources`` on some chip cannot be aligned with them (an empty or shutter-failed
    exposure): it is a failure too. A field that is blank in every exposure is not.

    Parameters
    ----------
    exposures
        Exposure files.
    profile
        Instrument profile (PSF size, saturation level).
    options
        Alignment options (``catalog``, ``min_sources``, ``workers``).

    Returns
    -------
    VisitCatalogs
    """
    opts = options or AlignOptions()
    paths = [Path(p) for p in exposures]

    failures: dict[Path, InputDataError] = {}
    chips: list[tuple[Path, int]] = []
    for path in paths:
        try:
            chips.extend((path, extver) for extver in exposure_extvers(path))
        except InputDataError as exc:  # this exposure's data: recorded, the visit goes on
            failures[path] = exc

    def one(chip: tuple[Path, int]) -> Any:
        try:
            return chip_catalog_of(*chip, profile=profile, options=opts.catalog)
        except InputDataError as exc:
            return exc

    # Source finding (photutils, numpy, scipy: mostly outside the GIL) runs in threads, one chip each:
    # the 6 chips of a 3-exposure visit take 3 rounds on 2 threads, where whole exposures took 4.
    with ThreadPoolExecutor(max_workers=worker_count(opts.workers, len(chips) or 1)) as pool:
        found = list(pool.map(one, chips))
    catalogs: dict[Path, dict[int, Any]] = {}
    for (path, extver), result in zip(chips, found, strict=True):
        if path in failures:
            continue
        if isinstance(result, InputDataError):  # the exposure's first bad chip fails it
            failures[path] = result
            catalogs.pop(path, None)
        else:
            catalogs.setdefault(path, {})[extver] = result
    for path in paths:
        if path in failures:
            log.warning("%s", failures[path])
    # in the visit's order; a file without SCI extensions has an empty catalog
    catalogs = {path: catalogs.get(path, {}) for path in paths if path not in failures}
    # counted on the strict sources (the first fit's), not the looser refinement set
    strict = {p: {e: strict_sources(t, opts.catalog) for e, t in c.items()} for p, c in catalogs.items()}
    counts = {p: sum(len(t) for t in s.values()) for p, s in strict.items()}
    usable = [p for p, s in strict.items() if any(len(t) >= opts.min_sources for t in s.values())]
    for path in [p for p, n in counts.items() if n == 0]:
        others = sorted(counts[p] for p in usable if p != path)
        if len(others) >= 2:
            failures[path] = InputDataError(
                path,
                f"no source found on any chip while {len(others)} other exposures of the visit have "
                f"{others[0]}-{others[-1]}: it cannot be aligned with them",
                fix="check the exposure (shutter, guiding, target) or download it again",
            )
            log.warning("%s", failures[path])
            del catalogs[path], strict[path]
    return VisitCatalogs(catalogs, failures, strict)
