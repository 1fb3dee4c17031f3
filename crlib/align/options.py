"""How a visit is aligned: :class:`AlignOptions`, every knob of :func:`crlib.align.visit.align_visit`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crlib.align.catalogs import CatalogOptions
from crlib.align.fit import MatchOptions
from crlib.align.verify import FitLimits


@dataclass(frozen=True, slots=True)
class AlignOptions:
    """How to align a visit.

    Attributes
    ----------
    catalog_file
        Local astrometric catalog (skips the network chain).
    catalog_name
        Name for ``catalog_file`` in WCSNAMEs (default: derived from the file name).
    query_catalogs
        Try GAIA DR3 -> GSC 2.4.2 -> 2MASS through astroquery when no file is given.
    timeout_s
        Per-query timeout, seconds (fail fast without network).
    vizier_server
        VizieR mirror host (default: astroquery's).
    min_sources
        Fewest sources a chip catalog needs to take part.
    relative_match, absolute_match
        Matching options of the two fits (the absolute search radius covers arcsec-level pointing errors).
    header_match
        Matching of the second relative try, around the header WCS (no 2-D histogram, a small
        search radius): used when the wide search fails although the header WCS already pairs the
        exposures' sources well beyond chance. The wide search's 2-D histogram peak can be pulled
        pixels off by the many unmatched sources (cosmic rays) of a sparse field, after which no
        match falls within the tolerance.
    refine_match
        Matching of the refinement pass (``None``: no refinement): once a relative fit is accepted,
        it is fitted again from the fitted WCS on the looser catalogs (``refine_min_pixels``), with
        a 1 px search and tolerance, so that stars of every sub-pixel phase take part (see
        :class:`~crlib.align.catalogs.CatalogOptions`); the same match rule applies, and the pass
        is kept only when every exposure succeeds.
    catalog
        Source-finding options.
    fit_limits
        When a relative fit is refused and the header WCS kept (:mod:`crlib.align.verify`).
    workers
        Threads that build the exposures' source catalogs at once (0: one per CPU core).
    """

    catalog_file: Path | None = None
    catalog_name: str | None = None
    query_catalogs: bool = True
    timeout_s: float = 5.0
    vizier_server: str | None = None
    min_sources: int = 4
    relative_match: MatchOptions = field(default_factory=MatchOptions)
    absolute_match: MatchOptions = field(default_factory=lambda: MatchOptions(searchrad=25.0))
    header_match: MatchOptions = field(default_factory=lambda: MatchOptions(searchrad=3.0, use2dhist=False))
    refine_match: MatchOptions | None = field(
        default_factory=lambda: MatchOptions(searchrad=1.0, tolerance=1.0, use2dhist=False)
    )
    catalog: CatalogOptions = field(default_factory=CatalogOptions)
    fit_limits: FitLimits = field(default_factory=FitLimits)
    workers: int = 0
