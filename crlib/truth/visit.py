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
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crlib.align.verify import header_error_px
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
from crlib.formats.flc import read_chip_sci, rootname_from_path
from crlib.profiles import InstrumentProfile, get_profile
from crlib.provenance import code_version
from crlib.records import AlignmentResult, TruthResult
from crlib.truth.artefacts import visit_hot_pixels
from crlib.truth.drizzle import DrizzleRun, run_astrodrizzle
from crlib.truth.drizzle_inmemory import run_inmemory_drizzle
from crlib.truth.inputs import read_chip_frames
from crlib.truth.options import TruthOptions, VisitTruth
from crlib.truth.outcome import ChipMasks, artefact_entries, chip_quality, failed_all, without_artefacts
from crlib.truth.product import write_exposure_truth
from crlib.truth.quality import assess, failed_truth, gate_parameters, star_core_mask
from crlib.truth.refine import prune_insignificant
from crlib.truth.validmask import ChipFrame, coverage_from_maps, coverage_maps, valid_mask

log = logging.getLogger(__name__)

__all__ = ["build_visit_truth", "visit_directories"]


def _coverages(
    infos: list[ExposureInfo], frames: dict[str, list[ChipFrame]], *, workers: int = 0
) -> dict[tuple[str, int], np.ndarray]:
    """:func:`~crlib.truth.validmask.coverage_count` of every chip, ``{(rootname, extver): uint8 (ny, nx)}``.

    The WCS mappings run in this thread (the chips' WCS objects, wcslib, are shared and not safe to
    call from several); the pixel work, numpy only, then runs in ``workers`` threads.
    """
    maps = {}
    for info in infos:
        others = [f for root, chips in frames.items() if root != info.rootname for f in chips]
        for frame in frames.get(info.rootname, []):
            maps[(info.rootname, frame.sci_extver)] = (frame.shape, coverage_maps(frame, others))
    with ThreadPoolExecutor(max_workers=worker_count(workers, len(maps) or 1)) as pool:
        counts = pool.map(lambda item: coverage_from_maps(*item), maps.values())
        return dict(zip(maps, counts, strict=True))


def _chip_masks(
    info: ExposureInfo,
    extver: int,
    sci: np.ndarray,
    crmask: np.ndarray,
    *,
    blot: np.ndarray | None,
    own: ChipFrame,
    others: list[ChipFrame],
    coverage: np.ndarray | None,
    hot: np.ndarray | None,
    options: TruthOptions,
) -> ChipMasks:
    """Compute step: one chip's truth from its driz_cr mask.

    Parameters
    ----------
    info, extver
        The exposure and the chip's SCI extension version.
    sci
        The chip's pixels, float32 (ny, nx), e-.
    crmask
        driz_cr's CR mask of the chip, (ny, nx), nonzero = flagged.
    blot
        The blotted median, float32 (ny, nx), e- (``None``: no pruning, no star cores).
    own, others, coverage
        The chip's frame, the other exposures' frames and its coverage count, uint8 (ny, nx), for
        :func:`~crlib.truth.validmask.valid_mask`.
    hot
        The visit's recurrent hot pixels on this chip, bool (ny, nx), or ``None``.
    options
        Stage options (``min_peak_snr``, ``exclude_artefacts``, valid-mask settings).

    Returns
    -------
    ChipMasks
        CR and valid masks with insignificant components pruned and artefacts kept out, and the
        chip's quality-gate numbers.
    """
    profile = info.profile
    valid = valid_mask(
        sci,
        own,
        others,
        profile=profile,
        min_exposures=options.min_exposures,
        border_px=options.border_px,
        coverage=coverage,
    )
    if blot is not None and options.min_peak_snr > 0:
        crmask, _ = prune_insignificant(
            crmask, sci, blot, read_noise_e=info.read_noise_e, min_peak_snr=options.min_peak_snr
        )
    counts: dict[str, int] | None = None
    if options.exclude_artefacts:
        crmask, valid, counts = without_artefacts(crmask, valid, hot=hot)
        if blot is not None and options.min_peak_snr > 0 and counts["hot_flagged"]:
            # a hot pixel's flagged neighbours (driz_cr_grow) lose their peak with it
            crmask, _ = prune_insignificant(
                crmask, sci, blot, read_noise_e=info.read_noise_e, min_peak_snr=options.min_peak_snr
            )
    valid_bool = valid.astype(bool)
    core = (
        star_core_mask(blot, valid=valid_bool, saturation_e=profile.saturation_e)
        if blot is not None
        else np.zeros_like(valid_bool)
    )
    quality = chip_quality(
        extver, crmask.astype(bool), valid_bool, core, exptime_s=info.exptime_s, profile=profile
    )
    return ChipMasks(crmask, valid, quality, counts)


def _exposure_truth(
    info: ExposureInfo,
    *,
    copy: Path,
    run: DrizzleRun,
    frames: dict[str, list[ChipFrame]],
    coverages: dict[tuple[str, int], np.ndarray],
    alignment: AlignmentResult | None,
    options: TruthOptions,
    out_dir: Path,
    provenance: dict[str, Any],
    hot_pixels: dict[int, np.ndarray] | None = None,
) -> TruthResult:
    """Read, compute, gate and write one exposure's truth from the visit's driz_cr run.

    Reads each chip of the working copy (its SCI equals the visit's file apart from the NaN/inf
    pixels :func:`~crlib.formats.exposures.flag_nonfinite` filled) with its driz_cr mask and blotted
    median, builds its masks (:func:`_chip_masks`), then gates the exposure
    (:func:`~crlib.truth.quality.assess`, with the visit's alignment) and writes its product. A chip
    without a driz_cr mask fails the exposure.
    """
    from astropy.io import fits

    others = [f for root, chip_frames in frames.items() if root != info.rootname for f in chip_frames]
    own = {f.sci_extver: f for f in frames[info.rootname]}
    chips: list[ChipMasks] = []
    missing = []
    with fits.open(copy, memmap=False) as hdul:
        for extver in info.sci_extvers:
            crmask = run.cr_mask(info.rootname, extver)
            if crmask is None:
                missing.append(extver)
                continue
            chip = _chip_masks(
                info,
                extver,
                np.asarray(hdul["SCI", extver].data, dtype=np.float32),
                crmask,
                blot=run.blot(info.rootname, extver),
                own=own[extver],
                others=others,
                coverage=coverages.get((info.rootname, extver)),
                hot=(hot_pixels or {}).get(extver),
                options=options,
            )
            chips.append(chip)
    if missing or not chips:
        return failed_truth(
            info.rootname, "drizzle", f"driz_cr produced no mask for chip(s) {missing}", **provenance
        )
    qualities = [c.quality for c in chips]
    status, reasons = assess(
        qualities,
        expected_rate_per_cm2_s=info.profile.cr_rate_per_cm2_s,
        alignment_rms_px=alignment.rms_px if alignment else None,
        alignment_status=alignment.status if alignment else None,
        alignment_matches=alignment.n_matches if alignment else 0,
        header_error_px=header_error_px(alignment) if alignment else None,
        thresholds=options.thresholds,
    )
    parameters = {**provenance, **gate_parameters(qualities)}
    header = {k: v for k, v in provenance.items() if len(k) <= 8}
    header["STATUS"] = status
    if options.exclude_artefacts:
        artefact_parameters, artefact_header = artefact_entries([c.artefacts or {} for c in chips])
        parameters.update(artefact_parameters)
        header.update(artefact_header)
    record = TruthResult(info.rootname, "drizzle", status, None, reasons=reasons, parameters=parameters)
    return write_exposure_truth(record, chips, header=header, out_dir=out_dir)


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
    visit_dir: Path, method: str, profile: InstrumentProfile | str | None
) -> tuple[list[ExposureInfo], list[TruthResult], InstrumentProfile | None]:
    """Read step: the visit's readable exposures, a ``failed`` record for each unreadable one.

    Also returns the profile (or the named one), by default the first readable file's. Raises
    :class:`~crlib.errors.InputDataError` when the directory holds no exposure file at all.
    """
    wanted = get_profile(profile) if isinstance(profile, str) else profile
    unreadable: list[TruthResult] = []
    infos: list[ExposureInfo] = []
    for path in find_exposures(visit_dir):
        try:
            info = read_exposure_info(path, profile=wanted)
        except InputDataError as exc:
            unreadable.append(failed_truth(rootname_from_path(path), method, str(exc)))
            continue
        wanted = wanted or info.profile
        infos.append(info)
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


def _hot_pixels(todo: list[ExposureInfo], copy_of: dict[str, Path], run: DrizzleRun) -> dict[int, np.ndarray]:
    """Compute step: the visit's recurrent hot pixels per chip, ``{extver: bool (ny, nx)}``; each SCI chip
    is read from its working copy when asked (:func:`~crlib.formats.flc.read_chip_sci`)."""
    return visit_hot_pixels(
        [
            (partial(read_chip_sci, copy_of[i.rootname]), partial(run.blot, i.rootname), i.read_noise_e)
            for i in todo
        ],
        todo[0].sci_extvers,
        flagged=[{e: run.cr_mask(i.rootname, e) for e in i.sci_extvers} for i in todo],
    )


def _visit_masks(
    infos: list[ExposureInfo],
    copies: list[Path],
    run: DrizzleRun,
    alignment: AlignmentResult | None,
    options: TruthOptions,
    out_dir: Path,
) -> list[TruthResult]:
    """Every exposure's truth from the visit's driz_cr run (:func:`_exposure_truth`).

    Exposures driz_cr made no mask for, when it reported problems, fail with those problems. The
    coverage counts and hot pixels, which need every exposure, are computed first; the pixel work
    per exposure (pruning, star cores, events, products) then runs in threads: numpy and scipy
    release the GIL, and nothing in it calls a WCS.
    """
    frames = {rootname_from_path(copy): read_chip_frames(copy) for copy in copies}
    provenance = _drizzle_provenance(run, len(infos), alignment, options)
    failed = {info.rootname for info in infos if run.problems and not run.has_mask(info.rootname)}
    results = [failed_truth(r, "drizzle", "; ".join(run.problems), **provenance) for r in sorted(failed)]
    todo = [info for info in infos if info.rootname not in failed]
    copy_of = {info.rootname: copy for info, copy in zip(infos, copies, strict=True)}
    coverages = _coverages(todo, frames, workers=options.workers) if options.min_exposures > 1 else {}
    hot_pixels = _hot_pixels(todo, copy_of, run) if options.exclude_artefacts and len(todo) >= 2 else {}

    def one_exposure(info: ExposureInfo) -> TruthResult:
        return _exposure_truth(
            info,
            copy=copy_of[info.rootname],
            run=run,
            frames=frames,
            coverages=coverages,
            alignment=alignment,
            options=options,
            out_dir=out_dir,
            provenance=provenance,
            hot_pixels=hot_pixels,
        )

    with ThreadPoolExecutor(max_workers=worker_count(options.workers, len(todo))) as pool:
        results.extend(pool.map(one_exposure, todo))
    return results


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
    (:func:`_visit_masks`). Each way the visit ends goes through :class:`_Progress`.

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
    infos, unreadable, wanted = _read_exposures(visit_dir, method, profile)
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
    progress.results.extend(_visit_masks(infos, copies, run, alignment, opts, out_dir))
    progress.seconds["masks"] = time.perf_counter() - t0
    return progress.finish(alignment, sort=True)
