"""The sky a visit covers and the absolute fit's reference catalog for it."""

from __future__ import annotations

from typing import Any

import numpy as np

from crlib.align.options import AlignOptions
from crlib.align.refcat import ReferenceCatalog, fetch_reference_catalog, read_catalog_file


def footprint_center(wcs: dict[tuple[str, int], Any]) -> tuple[float, float, float]:
    """(ra, dec, radius_arcmin) of a circle covering every chip."""
    from astropy.coordinates import SkyCoord

    corners = []
    for w in wcs.values():
        nx, ny = w.pixel_shape
        xs = np.array([0, nx - 1, 0, nx - 1, nx / 2])
        ys = np.array([0, 0, ny - 1, ny - 1, ny / 2])
        ra, dec = w.all_pix2world(xs, ys, 0)
        corners.append((ra, dec))
    ra = np.concatenate([c[0] for c in corners])
    dec = np.concatenate([c[1] for c in corners])
    points = SkyCoord(ra, dec, unit="deg")
    center = SkyCoord(points.cartesian.mean(), representation_type="cartesian").spherical
    center_coord = SkyCoord(center.lon, center.lat)
    radius = float(center_coord.separation(points).max().arcmin)
    return float(center_coord.ra.deg), float(center_coord.dec.deg), radius * 1.1 + 0.2


def restrict_to_footprint(refcat: ReferenceCatalog, wcs: dict[tuple[str, int], Any], margin_px: float) -> Any:
    """The reference sources that fall on any chip of ``wcs`` or within ``margin_px`` of it (a Table)."""
    from astropy.coordinates import SkyCoord

    # cut on angle first: the distortion polynomials diverge far outside the detector
    ra0, dec0, radius_arcmin = footprint_center(wcs)
    distance = SkyCoord(refcat.table["RA"], refcat.table["DEC"], unit="deg").separation(
        SkyCoord(ra0, dec0, unit="deg")
    )
    table = refcat.table[distance.arcmin < radius_arcmin]
    inside = np.zeros(len(table), dtype=bool)
    for w in wcs.values():
        x, y = w.all_world2pix(np.asarray(table["RA"]), np.asarray(table["DEC"]), 0, quiet=True)
        nx, ny = w.pixel_shape
        inside |= (x > -margin_px) & (x < nx + margin_px) & (y > -margin_px) & (y < ny + margin_px)
    subset = table[inside]
    subset.meta["name"] = refcat.name
    return subset


def reference_catalog(
    options: AlignOptions, wcs: dict[tuple[str, int], Any]
) -> tuple[ReferenceCatalog | None, str]:
    """The absolute fit's reference catalog (a file, or the first catalog service that answers).

    Returns
    -------
    tuple
        The catalog (``None`` when there is none) and a note saying where it came from or why not.
    """
    if options.catalog_file is not None:
        from_file = read_catalog_file(options.catalog_file, name=options.catalog_name)
        return from_file, f"catalog file {options.catalog_file}"
    if not options.query_catalogs:
        return None, "absolute fit disabled (no catalog file, catalog queries off)"
    ra, dec, radius = footprint_center(wcs)
    refcat, attempts = fetch_reference_catalog(
        ra_deg=ra,
        dec_deg=dec,
        radius_arcmin=radius,
        timeout_s=options.timeout_s,
        server=options.vizier_server,
    )
    return refcat, "; ".join(attempts)
