"""The truth stage's two drizzle engines on the same aligned inputs: do their CR masks agree, which is faster.

:func:`engine_agreement` copies one visit's aligned working copies twice, runs
:func:`crlib.truth.drizzle.run_astrodrizzle` (AstroDrizzle and its files) on one copy and
:func:`crlib.truth.drizzle_inmemory.run_inmemory_drizzle` on the other, and compares their
driz_cr masks chip by chip: per-pixel agreement, Jaccard index of the CR pixels, and the
largest difference of the blotted medians. Each engine's wall time and CPU time (all threads of
this process) are measured around its call.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crlib.bench.fair_timing import process_and_children_cpu_seconds
from crlib.profiles import InstrumentProfile
from crlib.truth.drizzle import DrizzleRun

#: Issue 16's limits for the in-memory engine's masks against AstroDrizzle's.
AGREEMENT_TARGETS = {"pixel_agreement": 0.9999, "cr_jaccard": 0.99}


def chip_agreement(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """Per-pixel agreement and CR Jaccard index of two masks of one chip (non-zero = CR).

    Returns
    -------
    dict
        ``pixel_agreement`` (fraction of equal pixels), ``cr_jaccard`` (1.0 when both are
        empty), ``differing_pixels``, ``cr_pixels`` of each mask.
    """
    a, b = np.asarray(first) != 0, np.asarray(second) != 0
    union = int(np.count_nonzero(a | b))
    differing = int(np.count_nonzero(a ^ b))
    return {
        "pixel_agreement": 1.0 - differing / a.size,
        "cr_jaccard": (union - differing) / union if union else 1.0,
        "differing_pixels": differing,
        "cr_pixels_astrodrizzle": int(a.sum()),
        "cr_pixels_inmemory": int(b.sum()),
    }


def engine_agreement(
    inputs: Sequence[Path], scratch: Path, *, profile: InstrumentProfile, output_name: str = "engines"
) -> dict[str, Any]:
    """Run both drizzle engines on copies of ``inputs`` and compare their masks.

    Parameters
    ----------
    inputs
        One visit's exposure files (e.g. the truth stage's aligned working copies); not modified.
    scratch
        ``scratch/astrodrizzle`` and ``scratch/inmemory`` are made afresh for the copies.
    profile
        Instrument profile.
    output_name
        Output root name for both runs.

    Returns
    -------
    dict
        ``chips`` (``rootname``, ``extver`` and :func:`chip_agreement` each), the worst
        ``pixel_agreement`` and ``cr_jaccard``, ``blot_max_abs_difference_e``, ``seconds`` and
        ``cpu_seconds`` per engine, ``problems`` per engine, ``targets`` and ``passed``.
    """
    from crlib.truth.drizzle import run_astrodrizzle
    from crlib.truth.drizzle_inmemory import run_inmemory_drizzle

    engines: dict[str, Callable[..., DrizzleRun]] = {
        "astrodrizzle": run_astrodrizzle,
        "inmemory": run_inmemory_drizzle,
    }
    runs: dict[str, DrizzleRun] = {}
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name, run_engine in engines.items():
        work = Path(scratch) / name
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        copies = [Path(shutil.copy(path, work / Path(path).name)) for path in inputs]
        cpu_start, start = process_and_children_cpu_seconds(), time.perf_counter()
        runs[name] = run_engine(copies, profile=profile, output_name=output_name)
        seconds[name], cpu[name] = time.perf_counter() - start, process_and_children_cpu_seconds() - cpu_start
    reference, candidate = runs["astrodrizzle"], runs["inmemory"]
    chips: list[dict[str, Any]] = []
    blot_difference = 0.0
    for rootname, extver in sorted({*reference.crmask_files, *candidate.masks}):
        first, second = reference.cr_mask(rootname, extver), candidate.cr_mask(rootname, extver)
        if first is None or second is None:
            missing_in = "astrodrizzle" if first is None else "inmemory"
            chips.append({"rootname": rootname, "extver": extver, "missing_in": missing_in})
            continue
        chips.append({"rootname": rootname, "extver": extver, **chip_agreement(first, second)})
        blot_a, blot_b = reference.blot(rootname, extver), candidate.blot(rootname, extver)
        if blot_a is not None and blot_b is not None:
            blot_difference = max(blot_difference, float(np.nanmax(np.abs(blot_a - blot_b))))
    compared = [c for c in chips if "pixel_agreement" in c]
    worst_agreement = min((float(c["pixel_agreement"]) for c in compared), default=float("nan"))
    worst_jaccard = min((float(c["cr_jaccard"]) for c in compared), default=float("nan"))
    return {
        "chips": chips,
        "pixel_agreement": worst_agreement,
        "cr_jaccard": worst_jaccard,
        "differing_pixels": sum(c["differing_pixels"] for c in compared),
        "blot_max_abs_difference_e": blot_difference,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "problems": {name: list(run.problems) for name, run in runs.items()},
        "targets": AGREEMENT_TARGETS,
        "passed": bool(
            compared
            and len(compared) == len(chips)
            and worst_agreement >= AGREEMENT_TARGETS["pixel_agreement"]
            and worst_jaccard >= AGREEMENT_TARGETS["cr_jaccard"]
        ),
    }
