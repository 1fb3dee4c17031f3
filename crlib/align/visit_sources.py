"""Source catalogs of a visit's exposures, measured in parallel, with per-exposure problems returned.

The read step of :mod:`crlib.align.catalogs`: :func:`exposure_catalogs` opens one exposure and hands
each chip's SCI and DQ arrays to :func:`~crlib.align.catalogs.chip_catalog`.
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


def exposure_catalogs(
    path: Path, *, profile: InstrumentProfile, options: CatalogOptions | None = None
) -> dict[int, object]:
    """Source catalog of every chip of one exposure, ``{sci_extver: Table}``.

    The chips are read one at a time, in file order (SCI and DQ only), and measured by
    :func:`~crlib.align.catalogs.chip_catalog`.

    Raises
    ------
    InputDataError
        The file cannot be read, a chip has no image or no DQ, a chip fails
        :func:`~crlib.formats.exposures.check_chip_pixels` (all-NaN, mostly NaN, constant), or
        photutils refuses its pixels; names file and chip.
    """
    from astropy.io import fits

    catalogs: dict[int, object] = {}
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise InputDataError(path, f"cannot read FITS file ({exc})", fix="download it again") from None
    with hdul:
        for extver, hdu in sci_extensions(hdul):
            dq = chip_dq(hdul, extver)
            if hdu.data is None or dq is None:
                raise InputDataError(
                    path, f"SCI,{extver} has no image or no DQ,{extver}", fix="pass a calibrated FLC/FLT file"
                )
            catalogs[extver] = chip_catalog(path, extver, hdu.data, dq, profile=profile, options=options)
    return catalogs


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

    def one(path: Path) -> dict[int, Any] | InputDataError:
        try:
            return exposure_catalogs(path, profile=profile, options=opts.catalog)
        except InputDataError as exc:  # this exposure's data: recorded, the visit goes on
            return exc

    # Source finding (photutils, numpy, scipy: mostly outside the GIL) runs in threads, one exposure each.
    with ThreadPoolExecutor(max_workers=worker_count(opts.workers, len(paths))) as pool:
        found = list(pool.map(one, paths))
    catalogs: dict[Path, dict[int, Any]] = {}
    failures: dict[Path, InputDataError] = {}
    for path, result in zip(paths, found, strict=True):
        if isinstance(result, InputDataError):
            log.warning("%s", result)
            failures[path] = result
        else:
            catalogs[path] = result
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
