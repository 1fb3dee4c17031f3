"""Visit alignment as drizzlepac's single-visit-mosaic processing does it, around tweakwcs.

Public API: :func:`align_visit` (catalogs -> relative fit -> absolute fit -> WCS update) and
:class:`AlignOptions`; the pieces live in :mod:`.catalogs`, :mod:`.fit`, :mod:`.refcat`,
:mod:`.wcsupdate` and :mod:`.exposures`.
"""

from crlib.align.visit import AlignOptions, align_visit

__all__ = ["AlignOptions", "align_visit"]
