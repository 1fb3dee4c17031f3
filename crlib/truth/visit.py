"""Ground truth for one visit: copy -> align -> AstroDrizzle driz_cr -> valid mask -> gates -> product.

:func:`build_visit_truth` is called by the pipeline's truth stage
(:func:`crlib.pipeline.stages.truth_stage`, once per screening set) and, per filter, by
``crlib truth`` (:mod:`crlib.truth.byfilter`). Every exposure ends with a
:class:`~crlib.records.TruthResult` (``ok``/``suspect``/``failed`` with reasons): a corrupt file, a
visit with one exposure or too few sources is recorded, not raised.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crlib.align.visit import align_visit
from crlib.align.visit_sources import VisitCatalogs, visit_catalogs
from crlib.config import worker_count
from crlib.errors import InputDataError
from crlib.formats.exposures import (
    ExposureInfo,
    copy_to_work_dir,
    find_exposures,
    flag_nonfinite,
    read_exposure_info,
)
from crlib.formats.flc import rootname_from_path
from crlib.profiles import InstrumentProfile, get_profile
from crlib.provenance import code_version
from crlib.records import AlignmentResult, TruthResult
from crlib.truth.drizzle import DrizzleRun, run_astrodrizzle
from crlib.truth.drizzle_inmemory import run_inmemory_drizzle
from crlib.truth.options import TruthOptions, VisitTruth
from crlib.truth.outcome import failed_all
from crlib.truth.quality import failed_truth
from crlib.truth.visit_masks import visit_masks

log = logging.getLogger(__name__)

__all__ = ["build_visit_truth", "visit_directories"]


def _too_few_reason(n_exposures: int) -> str:
    """Why every exposure of a visit with fewer than 2 usable exposures fails."""
    return (
        f"only {n_exposures} usable exposure(s) in the visit: driz_cr needs at least 2 overlapping exposures"
    )


def visit_directories(visit_dir: Path, work_dir: Path, out_dir: Path | None) -> tuple[Path, Path, Path]:
    """The visit, working and product directories as paths; products default to ``work_dir/truth``."""
    work_dir = Path(work_dir)
    return Path(visit_dir), work_dir, Path(out_dir) if out_dir is not None else work_dir / "truth"


@dataclass(slots=True)
class _Progress:
    """A visit's truth run so far: its exposures' records and the step timings (seconds).

    :meth:`finish` and :meth:`fail` are its only exits.
    """

    visit: str
    method: Literal["drizzle", "multiframe"]
    work_dir: Path
    out_dir: Path
    start: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)
    results: list[TruthResult] = field(default_factory=list)

    def finish(self, alignment: AlignmentResult | None, *, sort: bool) -> VisitTruth:
        """The :class:`VisitTruth` of the records so far (in rootname order when ``sort``)."""
        self.seconds["total"] = time.perf_counter() - self.start
        if sort:
            self.results.sort(key=lambda r: r.rootname)
        return VisitTruth(
            self.visit, self.method, alignment, tuple(self.results), self.seconds, self.work_dir, self.out_dir
        )

    def fail(
        self,
        infos: list[ExposureInfo],
        reason: str,
        *,
        alignment: AlignmentResult | None = None,
        sort: bool = False,
    ) -> VisitTruth:
        """:meth:`finish` with a ``failed`` record, with ``reason``, for each of ``infos``."""
        self.results.extend(failed_all(infos, self.method, reason))
        return self.finish(alignment, sort=sort)


def _read_exposures(
    visit_dir: Path, method: str, profile: InstrumentProfile | str | None, *, workers: int = 0
) -> tuple[list[ExposureInfo], list[TruthResult], InstrumentProfile | None]:
    """Read step: the visit's readable exposures, a ``failed`` record for each unreadable one.

    Also returns the profile (or the named one), by default the first readable file's. The files are
    read and checked in ``workers`` threads (astropy's reads and numpy's pixel checks release the
    GIL); a file whose profile differs from the first readable one's is read again with that profile,
    so its record names both. Raises :class:`~crlib.errors.InputDataError` when the directory holds
    no exposure file at all.
    """
    wanted = get_profile(profile) if isinstance(profile, str) else profile
    paths = find_exposures(visit_dir)

    def read(path: Path, expected: InstrumentProfile | None) -> ExposureInfo | InputDataError:
        try:
            return read_exposure_info(path, profile=expected)
        except InputDataError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=worker_count(workers, len(paths) or 1)) as pool:
        outcomes = list(pool.map(lambda path: read(path, wanted), paths))
    unreadable: list[TruthResult] = []
    infos: list[ExposureInfo] = []
    for path, outcome in zip(paths, outcomes, strict=True):
        if not isinstance(outcome, InputDataError) and wanted and outcome.profile.name != wanted.name:
            outcome = read(path, wanted)
        if isinstance(outcome, InputDataError):
            unreadable.append(failed_truth(rootname_from_path(path), method, str(outcome)))
            continue
        wanted = wanted or outcome.profile
        infos.append(outcome)
    if not infos and not unreadable:
        raise InputDataError(visit_dir, "no *_flc.fits or *_flt.fits files", fix="point at a visit directory")
    return infos, unreadable, wanted


def _refuse_mixed_filters(visit_dir: Path, infos: list[ExposureInfo]) -> None:
    """Gate step: raise :class:`~crlib.errors.InputDataError` when the exposures span filters."""
    filters = sorted({info.filter for info in infos})
    if len(filters) > 1:
        held = "; ".join(
            f"{name or 'no filter'}: {', '.join(i.rootname for i in infos if i.filter == name)}"
            for name in filters
        )
        raise InputDataError(
            visit_dir,
            f"holds exposures in {len(filters)} filters ({held}); driz_cr compares exposures of one filter",
            fix="build truth per filter: `crlib truth` does, or crlib.truth.byfilter.build_truth_per_filter",
        )


def _work_copies(infos: list[ExposureInfo], work_dir: Path) -> list[Path]:
    """Write step: fresh working copies of the exposures in ``work_dir``, non-finite pixels flagged."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    copies = copy_to_work_dir([i.path for i in infos], work_dir)
    for info, copy in zip(infos, copies, strict=True):
        if info.nonfinite_pixels:
            flag_nonfinite(copy)
    return copies


def _drop_unmeasurable(
    infos: list[ExposureInfo], copies: list[Path], catalogs: VisitCatalogs, method: str
) -> tuple[list[ExposureInfo], list[Path], list[TruthResult]]:
    """Gate step: leave out the exposures whose catalogs failed (their copies are deleted).

    Returns the remaining exposures and copies and a ``failed`` record naming the visit's file, not
    its working copy, for each exposure left out.
    """
    bad = dict(catalogs.failures)
    failures = []
    for info, copy in zip(infos, copies, strict=True):
        if copy in bad:
            named = InputDataError(info.path, bad[copy].problem, fix=bad[copy].fix)
            failures.append(failed_truth(info.rootname, method, str(named)))
            copy.unlink()
    kept = [i for i, c in zip(infos, copies, strict=True) if c not in bad]
    return kept, [c for c in copies if c not in bad], failures


def _drizzle_provenance(
    run: DrizzleRun, n_exposures: int, alignment: AlignmentResult | None, options: TruthOptions
) -> dict[str, Any]:
    """The visit's provenance: product header keywords (8 characters) and driz_cr parameters."""
    import drizzlepac

    return {
        "METHOD": "drizzle",
        "DRIZENG": run.engine,
        "PARSET": run.condition,
        "SKYREQ": run.skymethod_requested,
        "SKYMETH": run.skymethod_used,
        "NEXP": n_exposures,
        "ALIGNST": alignment.status if alignment else "skipped",
        "ALIGNRMS": alignment.rms_px if alignment and alignment.rms_px is not None else -1.0,
        "ALIGNCAT": (alignment.catalog or "none") if alignment else "none",
        "WCSNAME": (alignment.wcsname or "unchanged") if alignment else "unchanged",
        "BORDER": options.border_px,
        "MINPKSNR": options.min_peak_snr,
        "DRIZVER": drizzlepac.__version__,
        "CRLIBVER": code_version(),
        "driz_cr_snr": run.parameters.get("driz_cr_snr"),
        "driz_cr_scale": run.parameters.get("driz_cr_scale"),
        "combine_type": run.parameters.get("combine_type"),
    }


def _drizzle(
    copies: list[Path], profile: InstrumentProfile, visit: str, options: TruthOptions
) -> DrizzleRun | str:
    """Compute step: drizzle and driz_cr on the working copies (``options.engine``).

    A failure is returned as its reason.
    """
    common: dict[str, Any] = {
        "profile": profile,
        "output_name": f"{visit}_truth",
        "fix_skymatch": options.fix_skymatch,
        "overrides": options.drizzle_overrides,
    }
    try:
        if options.engine == "inmemory":
            return run_inmemory_drizzle(
                copies, **common, workers=options.workers, processes=options.drizzle_processes
            )
        return run_astrodrizzle(copies, **common)
    except Exception as exc:  # drizzlepac failing on a visit is an outcome to record, not a crash
        log.exception("drizzle (%s engine) failed on visit %s", options.engine, visit)
        engine = "AstroDrizzle" if options.engine == "astrodrizzle" else "drizzlepac (in-memory engine)"
        return f"{engine} failed: {type(exc).__name__}: {exc}"


def build_visit_truth(
    visit_dir: Path,
    *,
    work_dir: Path,
    out_dir: Path | None = None,
    method: Literal["drizzle", "multiframe"] = "drizzle",
    profile: InstrumentProfile | str | None = None,
    options: TruthOptions | None = None,
) -> VisitTruth:
    """Build ground-truth CR masks for every exposure of one visit directory.

    The steps: read the exposures (:func:`_read_exposures`), refuse mixed filters, copy them
    (:func:`_work_copies`), leave out those whose catalogs failed (:func:`_drop_unmeasurable`),
    align, run AstroDrizzle, then build, gate and write each exposure's truth
    (:func:`~crlib.truth.visit_masks.visit_masks`). Each way the visit ends goes through :class:`_Progress`.

    Parameters
    ----------
    visit_dir
        Directory holding the visit's ``*_flc.fits`` (never modified).
    work_dir
        Per-visit working directory (emptied, then filled with copies and drizzle products).
    out_dir
        Where ``<rootname>_crtruth.fits`` go (default: ``work_dir/truth``).
    method
        ``drizzle`` (AstroDrizzle driz_cr) or ``multiframe`` (numina-style stack statistics).
    profile
        Instrument profile or name (default: from the first readable file's header).
    options
        Stage options.

    Returns
    -------
    VisitTruth

    Raises
    ------
    InputDataError
        When the directory holds no exposure file, or exposures of more than one filter (see
        :mod:`crlib.truth.byfilter`).
    """
    opts = options or TruthOptions()
    visit_dir, work_dir, out_dir = visit_directories(visit_dir, work_dir, out_dir)
    visit = visit_dir.name
    progress = _Progress(visit, method, work_dir, out_dir)
    infos, unreadable, wanted = _read_exposures(visit_dir, method, profile, workers=opts.workers)
    progress.results.extend(unreadable)
    _refuse_mixed_filters(visit_dir, infos)
    if method == "multiframe":
        from crlib.truth.multiframe_visit import multiframe_visit_truth

        progress.results.extend(
            multiframe_visit_truth(
                infos, out_dir=out_dir, thresholds=opts.thresholds, border_px=opts.border_px
            )
        )
        return progress.finish(None, sort=False)
    if len(infos) < 2:
        return progress.fail(infos, _too_few_reason(len(infos)))

    t0 = time.perf_counter()
    copies = _work_copies(infos, work_dir)
    progress.seconds["copy"] = time.perf_counter() - t0
    assert wanted is not None
    alignment: AlignmentResult | None = None
    if opts.align:
        t0 = time.perf_counter()
        catalogs = visit_catalogs(copies, profile=wanted, options=opts.align_options)
        infos, copies, left_out = _drop_unmeasurable(infos, copies, catalogs, method)
        progress.results.extend(left_out)
        if len(infos) < 2:
            return progress.fail(infos, _too_few_reason(len(infos)), sort=True)
        alignment = align_visit(
            copies, visit=visit, profile=wanted, options=opts.align_options, catalogs=catalogs
        )
        progress.seconds["align"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run = _drizzle(copies, wanted, visit, opts)
    if isinstance(run, str):
        return progress.fail(infos, run, alignment=alignment)
    progress.seconds["drizzle"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    provenance = _drizzle_provenance(run, len(infos), alignment, opts)
    progress.results.extend(
        visit_masks(
            infos, copies, run, alignment=alignment, options=opts, out_dir=out_dir, provenance=provenance
        )
    )
    progress.seconds["masks"] = time.perf_counter() - t0
    return progress.finish(alignment, sort=True)
