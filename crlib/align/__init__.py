"""Visit alignment as drizzlepac's single-visit-mosaic processing does it, around tweakwcs.

Public API: :func:`align_visit` (catalogs -> relative fit -> absolute fit -> WCS update) and
:class:`AlignOptions` (:mod:`.options`); the pieces live in :mod:`.catalogs` and :mod:`.visit_sources`
(source catalogs), :mod:`.fit`, :mod:`.verify`, :mod:`.refcat` and :mod:`.reference_field`
(reference catalogs) and :mod:`.wcsupdate`; the exposure files and their checks are
:mod:`crlib.formats.exposures`.
"""

from crlib.align.options import AlignOptions
from crlib.align.visit import align_visit

__all__ = ["AlignOptions", "align_visit"]
