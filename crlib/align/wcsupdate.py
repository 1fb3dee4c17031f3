"""Write fitted WCS solutions into exposure headers with drizzlepac's ``updatehdr.update_wcs``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fitted_wcsname(current: str | None, label: str) -> str:
    """WCSNAME for a new solution: the distortion-model prefix of ``current`` plus ``-<label>``.

    Examples
    --------
    >>> fitted_wcsname("IDC_4bb1536cj-FIT_IMG_GAIAeDR3", "FIT_SVM_GAIADR3")
    'IDC_4bb1536cj-FIT_SVM_GAIADR3'
    >>> fitted_wcsname("", "FIT_REL")
    'FIT_REL'
    """
    base = (current or "").strip().split("-")[0]
    return f"{base}-{label}" if base else label


def write_wcs(
    path: Path, solutions: dict[int, Any], *, label: str, keywords: dict[str, Any] | None = None
) -> str:
    """Replace the primary WCS of each chip of one file, archiving the old one as drizzlepac does.

    Parameters
    ----------
    path
        Exposure file (a working copy; modified in place).
    solutions
        ``{sci_extver: HSTWCS}`` fitted solutions.
    label
        WCSNAME suffix ``FIT_<kind>_<catalog>``, e.g. ``FIT_REL_NONE`` or ``FIT_SVM_GAIADR3``: drizzlepac
        (``updatehdr.interpret_wcsname_type``, also called inside AstroDrizzle) fails on a bare
        ``FIT_REL``, so a relative fit is named ``FIT_REL_NONE`` as drizzlepac names it.
    keywords
        Extra keywords written to each updated SCI header (e.g. ``NMATCHES``, ``FITGEOM``).

    Returns
    -------
    str
        The WCSNAME written.
    """
    from astropy.io import fits
    from drizzlepac import updatehdr

    wcsname = label
    with fits.open(path, mode="update") as hdul:
        for extver, new_wcs in sorted(solutions.items()):
            wcsname = fitted_wcsname(hdul["SCI", extver].header.get("WCSNAME"), label)
            extnum = hdul.index_of(("SCI", extver))
            updatehdr.update_wcs(hdul, extnum, new_wcs, wcsname=wcsname, reusename=True)
            for key, value in (keywords or {}).items():
                hdul[extnum].header[key] = value
    log.debug("%s: WCSNAME %s written to %d chips", Path(path).name, wcsname, len(solutions))
    return wcsname
