"""Ground truth for one visit: copy -> align -> AstroDrizzle driz_cr -> valid mask -> gates -> product.

:func:`build_visit_truth` is the stage function the CLI and the DAGs call. Every exposure ends with
a :class:`~crlib.records.TruthResult` (``ok``/``suspect``/``failed`` with reasons): a corrupt file,
a visit with one exposure or too few sources is recorded, not raised.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crlib.align.exposures import (
    ExposureInfo,
    copy_to_work_dir,
    find_exposures,
    flag_nonfinite,
    read_exposure,
)
from crlib.align.verify import header_error_px
from crlib.align.visit import AlignOptions, align_visit, visit_catalogs
from crlib.config import worker_count
from crlib.errors import InputDataError
from crlib.profiles import InstrumentProfile, get_profile
from crlib.provenance import code_version
from crlib.records import AlignmentResult, ChipTruth, TruthResult
from crlib.truth.artefacts import (
    HEADER_KEYS,
    exclude_artefacts,
    find_satellite_trails,
    sum_counts,
    visit_hot_pixels,
)
from crlib.truth.drizzle import DrizzleRun, run_astrodrizzle
from crlib.truth.product import write_truth_product
from crlib.truth.quality import (
    ChipQuality,
    QualityThresholds,
    assess,
    count_events,
    failed_truth,
    gate_parameters,
    star_core_mask,
)
from crlib.truth.refine import DEFAULT_MIN_PEAK_SNR, prune_insignificant
from crlib.truth.validmask import ChipFrame, coverage_count, read_chip_frames, valid_mask

log = logging.getLogger(__name__)


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


def _blot_paths(work_dir: Path, rootname: str, extver: int) -> list[Path]:
    return sorted(work_dir.glob(f"{rootname}*_sci{extver}_blt.fits"))


def _blot_image(work_dir: Path, rootname: str, extver: int) -> np.ndarray | None:
    from astropy.io import fits

    for path in _blot_paths(work_dir, rootname, extver):
        with fits.open(path, memmap=False) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)
    return None


def _coverages(
    infos: list[ExposureInfo], frames: dict[str, list[ChipFrame]]
) -> dict[tuple[str, int], np.ndarray]:
    """:func:`coverage_count` of every chip, ``{(rootname, extver): uint8 (ny, nx)}``.

    Run in one thread: the chips' WCS objects (wcslib) are shared and not safe to call from several.
    """
    coverages = {}
    for info in infos:
        others = [f for root, chips in frames.items() if root != info.rootname for f in chips]
        for frame in frames.get(info.rootname, []):
            coverages[(info.rootname, frame.sci_extver)] = coverage_count(frame, others)
    return coverages


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
    from astropy.io import fits

    profile = info.profile
    others = [f for root, chip_frames in frames.items() if root != info.rootname for f in chip_frames]
    own = {f.sci_extver: f for f in frames[info.rootname]}
    masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    qualities: list[ChipQuality] = []
    chips: list[ChipTruth] = []
    missing = []
    artefact_counts: list[dict[str, int]] = []
    # the working copy: its SCI equals the visit's file apart from NaN/inf pixels flag_nonfinite filled
    with fits.open(copy, memmap=False) as hdul:
        for extver in info.sci_extvers:
            crmask = run.cr_mask(info.rootname, extver)
            if crmask is None:
                missing.append(extver)
                continue
            sci = np.asarray(hdul["SCI", extver].data, dtype=np.float32)
            valid = valid_mask(
                sci,
                own[extver],
                others,
                profile=profile,
                min_exposures=options.min_exposures,
                border_px=options.border_px,
                coverage=coverages.get((info.rootname, extver)),
            )
            valid_bool = valid.astype(bool)
            blot = _blot_image(run.work_dir, info.rootname, extver)
            if blot is not None and options.min_peak_snr > 0:
                crmask, _ = prune_insignificant(
                    crmask, sci, blot, read_noise_e=info.read_noise_e, min_peak_snr=options.min_peak_snr
                )
            if options.exclude_artefacts:
                band, trails = find_satellite_trails(crmask.astype(bool) & valid_bool)
                crmask, valid, counts = exclude_artefacts(
                    crmask, valid, hot=(hot_pixels or {}).get(extver), satellite_band=band
                )
                artefact_counts.append({**counts, "satellite_trails": len(trails)})
                valid_bool = valid.astype(bool)
                if blot is not None and options.min_peak_snr > 0 and counts["hot_flagged"]:
                    # a hot pixel's flagged neighbours (driz_cr_grow) lose their peak with it
                    crmask, _ = prune_insignificant(
                        crmask, sci, blot, read_noise_e=info.read_noise_e, min_peak_snr=options.min_peak_snr
                    )
            cr_valid = crmask.astype(bool) & valid_bool
            core = (
                star_core_mask(blot, valid=valid_bool, saturation_e=profile.saturation_e)
                if blot is not None
                else np.zeros_like(valid_bool)
            )
            events = count_events(cr_valid)
            qualities.append(
                ChipQuality(
                    chip=extver,
                    cr_pixels=int(cr_valid.sum()),
                    cr_events=events,
                    valid_pixels=int(valid_bool.sum()),
                    total_pixels=int(valid.size),
                    exptime_s=info.exptime_s,
                    pixel_area_cm2=profile.pixel_area_cm2,
                    star_core_pixels=int(core.sum()),
                    star_core_flagged=int((core & crmask.astype(bool)).sum()),
                )
            )
            chips.append(ChipTruth(extver, int(cr_valid.sum()), events, float(valid_bool.mean())))
            masks[extver] = (crmask, valid)
    if missing or not masks:
        return failed_truth(
            info.rootname, "drizzle", f"driz_cr produced no mask for chip(s) {missing}", **provenance
        )
    status, reasons = assess(
        qualities,
        expected_rate_per_cm2_s=profile.cr_rate_per_cm2_s,
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
        excluded = sum_counts(artefact_counts)
        parameters.update({f"artefact_{key}": value for key, value in excluded.items()})
        header.update({HEADER_KEYS[key]: value for key, value in excluded.items() if key in HEADER_KEYS})
    path = write_truth_product(
        out_dir / f"{info.rootname}_crtruth.fits",
        rootname=info.rootname,
        masks=masks,
        provenance=header,
        reasons=reasons,
    )
    return TruthResult(info.rootname, "drizzle", status, str(path), tuple(chips), reasons, parameters)


def _too_few_exposures(
    infos: list[ExposureInfo], method: Literal["drizzle", "multiframe"]
) -> list[TruthResult]:
    return [
        failed_truth(
            info.rootname,
            method,
            f"only {len(infos)} usable exposure(s) in the visit: "
            "driz_cr needs at least 2 overlapping exposures",
        )
        for info in infos
    ]


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
    visit_dir = Path(visit_dir)
    visit = visit_dir.name
    work_dir = Path(work_dir)
    out_dir = Path(out_dir) if out_dir is not None else work_dir / "truth"
    wanted = get_profile(profile) if isinstance(profile, str) else profile
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    results: list[TruthResult] = []
    infos: list[ExposureInfo] = []
    for path in find_exposures(visit_dir):
        try:
            info = read_exposure(path, profile=wanted)
        except InputDataError as exc:
            results.append(failed_truth(path.name.split("_")[0].lower(), method, str(exc)))
            continue
        wanted = wanted or info.profile
        infos.append(info)
    if not infos and not results:
        raise InputDataError(visit_dir, "no *_flc.fits or *_flt.fits files", fix="point at a visit directory")
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

    if method == "multiframe":
        from crlib.truth.multiframe_visit import multiframe_visit_truth

        results.extend(
            multiframe_visit_truth(
                infos, out_dir=out_dir, thresholds=opts.thresholds, border_px=opts.border_px
            )
        )
        seconds["total"] = time.perf_counter() - start
        return VisitTruth(visit, method, None, tuple(results), seconds, work_dir, out_dir)

    if len(infos) < 2:
        results.extend(_too_few_exposures(infos, method))
        seconds["total"] = time.perf_counter() - start
        return VisitTruth(visit, method, None, tuple(results), seconds, work_dir, out_dir)

    if work_dir.exists():
        shutil.rmtree(work_dir)
    t0 = time.perf_counter()
    copies = copy_to_work_dir([i.path for i in infos], work_dir)
    for info, copy in zip(infos, copies, strict=True):
        if info.nonfinite_pixels:
            flag_nonfinite(copy)
    seconds["copy"] = time.perf_counter() - t0
    assert wanted is not None

    alignment: AlignmentResult | None = None
    if opts.align:
        t0 = time.perf_counter()
        catalogs = visit_catalogs(copies, profile=wanted, options=opts.align_options)
        bad = dict(catalogs.failures)
        for info, copy in zip(infos, copies, strict=True):
            if copy in bad:
                # name the visit's file, not its working copy
                named = InputDataError(info.path, bad[copy].problem, fix=bad[copy].fix)
                results.append(failed_truth(info.rootname, method, str(named)))
                copy.unlink()
        infos = [i for i, c in zip(infos, copies, strict=True) if c not in bad]
        copies = [c for c in copies if c not in bad]
        if len(infos) < 2:
            results.extend(_too_few_exposures(infos, method))
            seconds["total"] = time.perf_counter() - start
            results.sort(key=lambda r: r.rootname)
            return VisitTruth(visit, method, None, tuple(results), seconds, work_dir, out_dir)
        alignment = align_visit(
            copies, visit=visit, profile=wanted, options=opts.align_options, catalogs=catalogs
        )
        seconds["align"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        run = run_astrodrizzle(
            copies,
            profile=wanted,
            output_name=f"{visit}_truth",
            fix_skymatch=opts.fix_skymatch,
            overrides=opts.drizzle_overrides,
        )
    except Exception as exc:  # drizzlepac failing on a visit is an outcome to record, not a crash
        log.exception("AstroDrizzle failed on visit %s", visit)
        for info in infos:
            results.append(
                failed_truth(info.rootname, method, f"AstroDrizzle failed: {type(exc).__name__}: {exc}")
            )
        seconds["total"] = time.perf_counter() - start
        return VisitTruth(visit, method, alignment, tuple(results), seconds, work_dir, out_dir)
    seconds["drizzle"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    frames = {copy.name.split("_")[0].lower(): read_chip_frames(copy) for copy in copies}
    import drizzlepac

    provenance: dict[str, Any] = {
        "METHOD": "drizzle",
        "PARSET": run.condition,
        "SKYREQ": run.skymethod_requested,
        "SKYMETH": run.skymethod_used,
        "NEXP": len(infos),
        "ALIGNST": alignment.status if alignment else "skipped",
        "ALIGNRMS": alignment.rms_px if alignment and alignment.rms_px is not None else -1.0,
        "ALIGNCAT": (alignment.catalog or "none") if alignment else "none",
        "WCSNAME": (alignment.wcsname or "unchanged") if alignment else "unchanged",
        "BORDER": opts.border_px,
        "MINPKSNR": opts.min_peak_snr,
        "DRIZVER": drizzlepac.__version__,
        "CRLIBVER": code_version(),
        "driz_cr_snr": run.parameters.get("driz_cr_snr"),
        "driz_cr_scale": run.parameters.get("driz_cr_scale"),
        "combine_type": run.parameters.get("combine_type"),
    }
    failed = {
        info.rootname
        for info in infos
        if run.problems and not any(key[0] == info.rootname for key in run.crmask_files)
    }
    results.extend(failed_truth(r, method, "; ".join(run.problems), **provenance) for r in sorted(failed))
    todo = [info for info in infos if info.rootname not in failed]
    copy_of = {info.rootname: copy for info, copy in zip(infos, copies, strict=True)}
    coverages = _coverages(todo, frames) if opts.min_exposures > 1 else {}
    hot_pixels: dict[int, np.ndarray] = {}
    if opts.exclude_artefacts and len(todo) >= 2:
        blots = {
            i.rootname: {e: p for e in i.sci_extvers for p in _blot_paths(run.work_dir, i.rootname, e)[:1]}
            for i in todo
        }
        hot_pixels = visit_hot_pixels(
            [(copy_of[i.rootname], blots[i.rootname], i.read_noise_e) for i in todo],
            todo[0].sci_extvers,
            flagged=[{e: run.cr_mask(i.rootname, e) for e in i.sci_extvers} for i in todo],
        )

    def one_exposure(info: ExposureInfo) -> TruthResult:
        return _exposure_truth(
            info,
            copy=copy_of[info.rootname],
            run=run,
            frames=frames,
            coverages=coverages,
            alignment=alignment,
            options=opts,
            out_dir=out_dir,
            provenance=provenance,
            hot_pixels=hot_pixels,
        )

    # pixel work per exposure (pruning, star cores, events, products) in threads: numpy and scipy
    # release the GIL; nothing in it calls a WCS.
    with ThreadPoolExecutor(max_workers=worker_count(opts.workers, len(todo))) as pool:
        results.extend(pool.map(one_exposure, todo))
    seconds["masks"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    results.sort(key=lambda r: r.rootname)
    return VisitTruth(visit, method, alignment, tuple(results), seconds, work_dir, out_dir)
