"""Visits observed in several filters: ground truth for each filter's exposures separately.

driz_cr compares each exposure with the median of the visit's other exposures, so the exposures it
compares must share a bandpass: a star is brighter in F814W than in F435W, and a median of mixed
filters would label the difference a cosmic ray. Real ACS/WFC visits often hold several filters
(drizzlepac's single-visit processing makes one product per filter for the same reason), so
:func:`build_truth_per_filter` splits a visit directory by filter (``FILTER1``/``FILTER2``/``FILTER``,
``CLEAR`` wheels ignored), stages each filter's files as links in a directory named like the visit,
and runs :func:`crlib.truth.visit.build_visit_truth` on each. A filter with a single exposure gets
``failed`` truth with that reason, and its exposure still gets model inference in the pipeline
(screening groups the same way: :func:`crlib.screening.group_verdicts`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Unpack

from crlib.formats.exposures import find_exposures
from crlib.formats.flc import header_filter
from crlib.truth.options import TruthArguments, VisitTruth
from crlib.truth.visit import build_visit_truth, visit_directories

log = logging.getLogger(__name__)

UNREADABLE = "?"
"""Group of the files whose primary header cannot be read (their truth records say why)."""


def exposures_by_filter(visit_dir: Path) -> dict[str, list[Path]]:
    """The visit's calibrated exposure files grouped by filter, from their primary headers only.

    Parameters
    ----------
    visit_dir
        Directory holding ``*_flc.fits`` / ``*_flt.fits`` (FLC preferred, as
        :func:`crlib.formats.exposures.find_exposures`).

    Returns
    -------
    dict
        Filter name (e.g. ``F606W``; ``""`` when the header names none; ``"?"`` when the header is
        unreadable) to the sorted file paths, in filter order.
    """
    from astropy.io import fits

    groups: dict[str, list[Path]] = defaultdict(list)
    for path in find_exposures(visit_dir):
        try:
            name = header_filter(fits.getheader(path, 0))
        except (OSError, ValueError, TypeError, IndexError, KeyError):
            name = UNREADABLE  # build_visit_truth records what is wrong with the file
        groups[name].append(path)
    return {name: sorted(paths) for name, paths in sorted(groups.items())}


def _stage(paths: list[Path], directory: Path) -> Path:
    """Links to ``paths`` in a fresh ``directory`` (named like the visit, which names the products)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for path in paths:
        os.symlink(Path(path).resolve(), directory / Path(path).name)
    return directory


def build_truth_per_filter(
    visit_dir: Path, *, work_dir: Path, **arguments: Unpack[TruthArguments]
) -> list[VisitTruth]:
    """Ground truth for every exposure of a visit directory, one truth run per filter.

    Parameters
    ----------
    visit_dir
        Directory holding the visit's ``*_flc.fits`` (never modified).
    work_dir
        Working directory. A single-filter visit uses it as :func:`build_visit_truth` does; a
        multi-filter visit gets ``work_dir/<filter>/`` per filter (links to its files in
        ``input/<visit>/``, drizzle products in ``drizzle/``).
    **arguments
        ``out_dir`` (where every filter's ``<rootname>_crtruth.fits`` go; default:
        ``work_dir/truth``), ``method``, ``profile``, ``options``: as :func:`build_visit_truth`.

    Returns
    -------
    list of VisitTruth
        One per filter, in filter order (one element for a single-filter visit); each names the
        visit directory's name as its visit.
    """
    visit_dir, work_dir, arguments["out_dir"] = visit_directories(
        visit_dir, work_dir, arguments.get("out_dir")
    )
    groups = exposures_by_filter(visit_dir)
    if len(groups) <= 1:
        return [build_visit_truth(visit_dir, work_dir=work_dir, **arguments)]
    log.info(
        "visit %s holds %d filters (%s): truth per filter",
        visit_dir.name,
        len(groups),
        ", ".join(f"{name or 'none'}: {len(paths)}" for name, paths in groups.items()),
    )
    results: list[VisitTruth] = []
    for name, paths in groups.items():
        filter_dir = work_dir / (name or "nofilter").replace(UNREADABLE, "unreadable")
        staged = _stage(paths, filter_dir / "input" / visit_dir.name)
        results.append(build_visit_truth(staged, work_dir=filter_dir / "drizzle", **arguments))
    return results
