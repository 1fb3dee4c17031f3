"""Timing two tools fairly in one process: nothing imported inside a timer, alternating order.

``crlib bench truth`` times the truth stage against bare AstroDrizzle (:mod:`crlib.bench.truth`):
every module the timed paths import lazily is imported first (:func:`preload_modules`), the timed
runs alternate ``crlib, bare, bare, crlib, ...`` (:func:`alternation_order`), and each timer wraps
the call alone and records any module imported meanwhile (:func:`time_call`); the report carries
the load average around the runs (:func:`load_average`).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from crlib.bench.truth_report import BARE, CRLIB

T = TypeVar("T")

#: Modules the timed paths import lazily (drizzlepac, alignment, masks): imported before any timer.
PRELOAD_MODULES = (
    "astropy.io.fits",
    "scipy.ndimage",
    "spherical_geometry.graph",
    "spherical_geometry.polygon",
    "stwcs.wcsutil",
    "tweakwcs",
    "photutils.background",
    "photutils.detection",
    "drizzlepac",
    "drizzlepac.acsData",
    "drizzlepac.astrodrizzle",
    "drizzlepac.wfc3Data",
    "drizzlepac.updatehdr",
    "crlib.formats.exposures",
    "crlib.align.visit",
    "crlib.truth.drizzle",
    "crlib.truth.visit",
)


def process_and_children_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and of its waited-for children."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def preload_modules() -> tuple[str, ...]:
    """Import every module the two timed paths import lazily, so no import happens inside a timer.

    Returns
    -------
    tuple of str
        The modules imported (all of :data:`PRELOAD_MODULES`).
    """
    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    return PRELOAD_MODULES


def alternation_order(repeats: int) -> list[str]:
    """Order of the timed runs: ``crlib, bare, bare, crlib, crlib, bare, ...`` (``repeats`` of each).

    Each tool runs first in every other pair, so a drift of the machine's load or file cache
    during the benchmark does not favour either.

    Raises
    ------
    ValueError
        For ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    order: list[str] = []
    for index in range(repeats):
        order.extend((CRLIB, BARE) if index % 2 == 0 else (BARE, CRLIB))
    return order


def time_call(call: Callable[[], T]) -> tuple[T, float, tuple[str, ...]]:
    """Wall time of ``call()`` alone, and the modules that appeared in ``sys.modules`` meanwhile.

    The ``sys.modules`` snapshots are taken outside the timed region; a non-empty third element
    means the timed region paid for an import.

    Returns
    -------
    tuple
        ``(result, seconds, modules imported during the call)``.
    """
    before = set(sys.modules)
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    return result, seconds, tuple(sorted(set(sys.modules) - before))


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded (empty where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []
