"""The truth stage's options and its result for one visit (:func:`crlib.truth.visit.build_visit_truth`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from crlib.align.options import AlignOptions
from crlib.profiles import InstrumentProfile
from crlib.records import AlignmentResult, TruthResult
from crlib.truth.drizzle import DrizzleEngine
from crlib.truth.quality import QualityThresholds
from crlib.truth.refine import DEFAULT_MIN_PEAK_SNR

__all__ = ["TruthArguments", "TruthOptions", "VisitTruth"]


@dataclass(frozen=True, slots=True)
class TruthOptions:
    """Options of the truth stage.

    Attributes
    ----------
    align
        Align the visit before drizzling (turn off only for pre-aligned data).
    align_options
        Catalog file / catalog chain / matching options.
    border_px
        Pixels discarded along chip edges in the valid mask (paper: 128; default 0).
    min_exposures
        Exposures that must cover a pixel for it to be valid.
    thresholds
        Quality-gate limits.
    fix_skymatch
        Make ``skymethod='match'`` really run (see :mod:`crlib.truth.drizzle`).
    min_peak_snr
        Drop driz_cr components whose brightest pixel is below this significance over the blotted
        median (see :mod:`crlib.truth.refine`); 0 keeps driz_cr's mask as it is.
    drizzle_overrides
        Extra AstroDrizzle keywords.
    workers
        Threads that build the exposures' masks at once (0: one per CPU core).
    exclude_artefacts
        Keep satellite trails and recurrent (hot) pixels out of the CR and valid masks
        (:mod:`crlib.truth.artefacts`) and count them in the record.
    engine
        ``inmemory`` (:mod:`crlib.truth.drizzle_inmemory`: drizzlepac's steps without their files,
        driz_cr on arrays; the same masks, faster) or ``astrodrizzle`` (the ``AstroDrizzle`` call
        and its files, :mod:`crlib.truth.drizzle`).
    drizzle_processes
        Forked processes for the in-memory engine's single drizzle and blot
        (:mod:`crlib.truth.drizzle_forked`; 0: one per exposure, at most two per core of
        ``workers``, none with one core; 1: none).
    """

    align: bool = True
    align_options: AlignOptions = field(default_factory=AlignOptions)
    border_px: int = 0
    min_exposures: int = 2
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    fix_skymatch: bool = True
    min_peak_snr: float = DEFAULT_MIN_PEAK_SNR
    drizzle_overrides: dict[str, Any] = field(default_factory=dict)
    workers: int = 0
    exclude_artefacts: bool = True
    engine: DrizzleEngine = "inmemory"
    drizzle_processes: int = 0


class TruthArguments(TypedDict, total=False):
    """The optional keywords of :func:`build_visit_truth`, for the functions that pass them on."""

    out_dir: Path | None
    method: Literal["drizzle", "multiframe"]
    profile: InstrumentProfile | str | None
    options: TruthOptions | None


@dataclass(frozen=True, slots=True)
class VisitTruth:
    """Everything the truth stage produced for one visit.

    Attributes
    ----------
    visit
        Visit id (directory name).
    method
        ``drizzle`` or ``multiframe``.
    alignment
        Alignment record, ``None`` when alignment was skipped or impossible.
    exposures
        One :class:`TruthResult` per exposure file found.
    seconds
        Wall time per step (``copy``, ``align``, ``drizzle``, ``masks``, ``total``), seconds.
    work_dir, out_dir
        Where the working copies and the products are.
    """

    visit: str
    method: Literal["drizzle", "multiframe"]
    alignment: AlignmentResult | None
    exposures: tuple[TruthResult, ...]
    seconds: dict[str, float]
    work_dir: Path
    out_dir: Path
