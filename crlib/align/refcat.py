"""Astrometric reference catalogs for the absolute fit: GAIA DR3 -> GSC 2.4.2 -> 2MASS, or a file.

drizzlepac's SVM processing tries ``GAIAeDR3``, ``GSC242`` and ``2MASS`` in turn; we query the same
catalogs through astroquery's VizieR client with a short timeout, so that without network every
attempt fails within seconds and the visit keeps its relative fit. A local catalog file (for
example ``gaia_dr2_ngc6791_wfc3_ibwb01.cat``: whitespace columns ``ra dec mag``) skips the network.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CatalogSource:
    """One VizieR astrometric catalog: its name in WCSNAMEs and its VizieR table/columns."""

    name: str
    vizier_table: str
    ra_column: str
    dec_column: str
    mag_column: str


#: The SVM fallback chain, in order.
CATALOG_CHAIN: tuple[CatalogSource, ...] = (
    CatalogSource("GAIADR3", "I/355/gaiadr3", "RA_ICRS", "DE_ICRS", "Gmag"),
    CatalogSource("GSC242", "I/353/gsc242", "RA_ICRS", "DE_ICRS", "Gmag"),
    CatalogSource("2MASS", "II/246/out", "RAJ2000", "DEJ2000", "Jmag"),
)


@dataclass(frozen=True, slots=True)
class ReferenceCatalog:
    """A reference catalog ready for tweakwcs (``table`` has ``RA``, ``DEC`` in degrees, ``mag``)."""

    name: str
    table: Any
    attempts: tuple[str, ...] = ()


def _table(ra: np.ndarray, dec: np.ndarray, mag: np.ndarray, name: str) -> Any:
    from astropy.table import Table

    good = np.isfinite(ra) & np.isfinite(dec)
    table = Table({"RA": ra[good], "DEC": dec[good], "mag": mag[good]})
    table.meta["name"] = name
    return table


def catalog_name_for_file(path: Path) -> str:
    """A short upper-case catalog name for WCSNAMEs derived from a file name."""
    tokens = Path(path).stem.split("_")[:2]
    stem = re.sub(r"[^A-Za-z0-9]", "", "".join(tokens))
    return (stem.upper() or "FILE")[:16]


def read_catalog_file(path: Path, *, name: str | None = None) -> ReferenceCatalog:
    """Read a reference catalog file.

    Parameters
    ----------
    path
        Whitespace text with columns ``ra dec [mag]`` (``#`` comments), or any table astropy reads
        (ECSV, FITS, VOTable) with ``ra``/``dec`` columns (any case), degrees.
    name
        Catalog name for the WCSNAME (default: derived from the file name).

    Raises
    ------
    InputDataError
        Unreadable file, no ra/dec columns, or no rows.
    """
    from astropy.table import Table

    path = Path(path)
    label = name or catalog_name_for_file(path)
    try:
        if path.suffix.lower() in (".ecsv", ".fits", ".fit", ".vot", ".xml"):
            table = Table.read(path)
            columns = {c.lower(): c for c in table.colnames}
            ra_col = columns.get("ra") or columns.get("ra_icrs")
            dec_col = columns.get("dec") or columns.get("de_icrs")
            if ra_col is None or dec_col is None:
                raise InputDataError(path, "no ra/dec columns", fix="name the columns ra and dec (degrees)")
            mag_col = next((columns[c] for c in ("mag", "phot_g_mean_mag", "gmag") if c in columns), None)
            ra = np.asarray(table[ra_col], float)
            dec = np.asarray(table[dec_col], float)
            mag = np.asarray(table[mag_col], float) if mag_col else np.full(len(ra), np.nan)
        else:
            data = np.loadtxt(path, comments="#", ndmin=2)
            if data.shape[1] < 2:
                raise InputDataError(
                    path, "needs at least two columns (ra dec)", fix="write 'ra dec mag' rows"
                )
            ra, dec = data[:, 0], data[:, 1]
            mag = data[:, 2] if data.shape[1] > 2 else np.full(len(ra), np.nan)
    except InputDataError:
        raise
    except (OSError, ValueError) as exc:
        raise InputDataError(path, f"cannot read reference catalog ({exc})", fix="check the file") from None
    table = _table(ra, dec, mag, label)
    if len(table) == 0:
        raise InputDataError(path, "reference catalog has no rows", fix="use a catalog covering the field")
    return ReferenceCatalog(label, table, (f"{label}: read {len(table)} sources from {path}",))


def query_catalog(
    source: CatalogSource,
    *,
    ra_deg: float,
    dec_deg: float,
    radius_arcmin: float,
    timeout_s: float,
    server: str | None = None,
    row_limit: int = 20000,
) -> Any:
    """Query one VizieR catalog around a position (raises on any network/service failure)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astroquery.vizier import Vizier

    kwargs: dict[str, Any] = {
        "columns": [source.ra_column, source.dec_column, source.mag_column],
        "row_limit": row_limit,
        "timeout": timeout_s,
    }
    if server:
        kwargs["vizier_server"] = server
    vizier = Vizier(**kwargs)
    center = SkyCoord(ra_deg * u.deg, dec_deg * u.deg)
    result = vizier.query_region(
        center, radius=radius_arcmin * u.arcmin, catalog=source.vizier_table, cache=False
    )
    if result is None or len(result) == 0:
        return _table(np.array([]), np.array([]), np.array([]), source.name)
    table = result[0]
    return _table(
        np.asarray(table[source.ra_column], float),
        np.asarray(table[source.dec_column], float),
        np.asarray(
            table[source.mag_column].filled(np.nan)
            if hasattr(table[source.mag_column], "filled")
            else table[source.mag_column],
            float,
        ),
        source.name,
    )


def fetch_reference_catalog(
    *,
    ra_deg: float,
    dec_deg: float,
    radius_arcmin: float,
    chain: tuple[CatalogSource, ...] = CATALOG_CHAIN,
    min_sources: int = 6,
    timeout_s: float = 5.0,
    server: str | None = None,
) -> tuple[ReferenceCatalog | None, tuple[str, ...]]:
    """First catalog of the chain that answers with at least ``min_sources`` sources.

    Returns
    -------
    tuple
        ``(catalog, attempts)``: the catalog, or ``None`` when none could be reached or none had
        enough sources; ``attempts`` says what happened to each catalog tried.
    """
    attempts: list[str] = []
    for source in chain:
        try:
            table = query_catalog(
                source,
                ra_deg=ra_deg,
                dec_deg=dec_deg,
                radius_arcmin=radius_arcmin,
                timeout_s=timeout_s,
                server=server,
            )
        except Exception as exc:  # any network, HTTP or parsing failure means "try the next catalog"
            attempts.append(f"{source.name}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
            log.info("reference catalog %s unavailable: %s", source.name, exc)
            continue
        if len(table) < min_sources:
            attempts.append(f"{source.name}: only {len(table)} sources")
            continue
        attempts.append(f"{source.name}: {len(table)} sources")
        return ReferenceCatalog(source.name, table, tuple(attempts)), tuple(attempts)
    log.warning("no astrometric catalog reachable: %s", "; ".join(attempts))
    return None, tuple(attempts)
