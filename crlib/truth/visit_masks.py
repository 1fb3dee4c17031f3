"""The mask phase of a visit's drizzle truth: driz_cr masks -> valid masks, pruning, gates, products.

:func:`visit_masks` is called by :func:`crlib.truth.visit.build_visit_truth` once driz_cr has run.
Its work, on one thread pool of ``TruthOptions.workers`` threads (numpy and scipy release the GIL;
nothing in the pool calls a WCS):

1. the visit-wide inputs, which need every exposure: the recurrent hot pixels of each chip
   (:func:`~crlib.truth.artefacts.visit_hot_pixels`, one job per chip) run in the pool while this
   thread makes the coverage maps' WCS half (:func:`~crlib.truth.validmask.coverage_maps`: wcslib is
   not safe to call from several threads); the pixel half of each chip's coverage count then joins
   the pool;
2. each chip's masks (:func:`_chip_masks`), one job per (exposure, chip), so that a 3-exposure,
   2-chip visit fills 2 threads in 3 rounds instead of ending on one exposure alone;
3. each exposure's gates and product, in this thread, as soon as its chips are done.

The masks do not depend on the number of threads.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from crlib.align.verify import header_error_px
from crlib.config import worker_count
from crlib.formats.exposures import ExposureInfo
from crlib.formats.flc import read_chip_sci, rootname_from_path
from crlib.records import AlignmentResult, TruthResult
from crlib.truth.artefacts import visit_hot_pixels
from crlib.truth.drizzle import DrizzleRun
from crlib.truth.inputs import read_chip_frames
from crlib.truth.options import TruthOptions
from crlib.truth.outcome import ChipMasks, artefact_entries, chip_quality, without_artefacts
from crlib.truth.product import write_exposure_truth
from crlib.truth.quality import assess, failed_truth, gate_parameters, star_core_mask
from crlib.truth.refine import prune_insignificant
from crlib.truth.validmask import ChipFrame, coverage_from_maps, coverage_maps, valid_mask

log = logging.getLogger(__name__)

__all__ = ["visit_masks"]


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


def _coverage_counts(
    todo: list[ExposureInfo],
    frames: dict[str, list[ChipFrame]],
    others_of: dict[str, list[ChipFrame]],
    pool: ThreadPoolExecutor,
) -> dict[tuple[str, int], Future[np.ndarray]]:
    """:func:`~crlib.truth.validmask.coverage_count` of every chip, as futures of uint8 (ny, nx) arrays
    keyed by ``(rootname, extver)``.

    The WCS mappings run in this thread (the chips' WCS objects, wcslib, are shared and not safe to
    call from several); the pixel work, numpy only, is handed to ``pool``.
    """
    counts = {}
    for info in todo:
        for frame in frames.get(info.rootname, []):
            maps = coverage_maps(frame, others_of[info.rootname])
            counts[(info.rootname, frame.sci_extver)] = pool.submit(coverage_from_maps, frame.shape, maps)
    return counts


def _chip_hot_pixels(
    todo: list[ExposureInfo],
    copy_of: dict[str, Path],
    run: DrizzleRun,
    masks: dict[tuple[str, int], np.ndarray | None],
    extver: int,
) -> np.ndarray | None:
    """One chip's recurrent hot pixels across ``todo`` (the exposures with a driz_cr mask of it), bool
    (ny, nx), or ``None`` when it has none to judge (a blot image missing in some exposure); each SCI
    is read from its working copy when asked."""
    maps = visit_hot_pixels(
        [
            (partial(read_chip_sci, copy_of[i.rootname]), partial(run.blot, i.rootname), i.read_noise_e)
            for i in todo
        ],
        [extver],
        flagged=[{extver: masks.get((i.rootname, extver))} for i in todo],
    )
    return maps.get(extver)


def _exposure_record(
    info: ExposureInfo,
    chips: list[ChipMasks],
    *,
    alignment: AlignmentResult | None,
    options: TruthOptions,
    out_dir: Path,
    provenance: dict[str, Any],
) -> TruthResult:
    """Gate step and write step: one exposure's status (:func:`~crlib.truth.quality.assess`, with the
    visit's alignment) and its product, from its chips' masks."""
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


def visit_masks(
    infos: list[ExposureInfo],
    copies: list[Path],
    run: DrizzleRun,
    *,
    alignment: AlignmentResult | None,
    options: TruthOptions,
    out_dir: Path,
    provenance: dict[str, Any],
) -> list[TruthResult]:
    """Every exposure's truth from the visit's driz_cr run.

    Parameters
    ----------
    infos, copies
        The visit's exposures and their working copies (same order); each chip's SCI is read from
        its copy (equal to the visit's file apart from the non-finite pixels the copy step flagged).
    run
        The visit's drizzle run: CR masks (uint8, 1 = CR) and blotted medians (float32 e-) per chip.
    alignment
        The visit's alignment (``None`` when skipped), for the gates and the provenance.
    options
        Stage options (``workers`` threads, ``min_exposures``, ``exclude_artefacts``, gates).
    out_dir
        Where ``<rootname>_crtruth.fits`` go.
    provenance
        The product header keywords and recorded parameters shared by the visit's exposures.

    Returns
    -------
    list of TruthResult
        One per exposure of ``infos``: ``failed`` with driz_cr's problems when it made no mask for
        the exposure, ``failed`` naming the chips it made no mask for, else the gated record with
        its product's path.
    """
    frames = {rootname_from_path(copy): read_chip_frames(copy) for copy in copies}
    others_of = {
        root: [f for other, chips in frames.items() if other != root for f in chips] for root in frames
    }
    copy_of = {info.rootname: copy for info, copy in zip(infos, copies, strict=True)}
    failed = {info.rootname for info in infos if run.problems and not run.has_mask(info.rootname)}
    results = [failed_truth(r, "drizzle", "; ".join(run.problems), **provenance) for r in sorted(failed)]
    todo = [info for info in infos if info.rootname not in failed]
    masks = {(i.rootname, e): run.cr_mask(i.rootname, e) for i in todo for e in i.sci_extvers}
    missing = {i.rootname: [e for e in i.sci_extvers if masks[(i.rootname, e)] is None] for i in todo}
    for info in todo:
        if missing[info.rootname] or not info.sci_extvers:
            reason = f"driz_cr produced no mask for chip(s) {missing[info.rootname]}"
            results.append(failed_truth(info.rootname, "drizzle", reason, **provenance))
    # a chip's hot pixels are judged on every exposure with a driz_cr mask of that chip, including one
    # that fails below for lacking another chip's mask
    masked_in = {
        e: [i for i in todo if masks.get((i.rootname, e)) is not None] for e in {e for _, e in masks}
    }
    todo = [info for info in todo if info.sci_extvers and not missing[info.rootname]]
    with ThreadPoolExecutor(max_workers=worker_count(options.workers, max(1, len(masks)))) as pool:
        hot_jobs = {
            e: pool.submit(_chip_hot_pixels, members, copy_of, run, masks, e)
            for e, members in sorted(masked_in.items())
            if options.exclude_artefacts and len(members) >= 2
        }
        coverage_jobs = _coverage_counts(todo, frames, others_of, pool) if options.min_exposures > 1 else {}
        coverages = {key: job.result() for key, job in coverage_jobs.items()}
        hot = {e: job.result() for e, job in hot_jobs.items()}
        chip_jobs = {
            (info.rootname, extver): pool.submit(
                _one_chip,
                info,
                extver,
                copy_of[info.rootname],
                masks,
                run,
                frames,
                others_of,
                coverages,
                hot,
                options,
            )
            for info in todo
            for extver in info.sci_extvers
        }
        for info in todo:
            chips = [chip_jobs[(info.rootname, e)].result() for e in info.sci_extvers]
            results.append(
                _exposure_record(
                    info, chips, alignment=alignment, options=options, out_dir=out_dir, provenance=provenance
                )
            )
    return results


def _one_chip(
    info: ExposureInfo,
    extver: int,
    copy: Path,
    masks: dict[tuple[str, int], np.ndarray | None],
    run: DrizzleRun,
    frames: dict[str, list[ChipFrame]],
    others_of: dict[str, list[ChipFrame]],
    coverages: dict[tuple[str, int], np.ndarray],
    hot: dict[int, np.ndarray | None],
    options: TruthOptions,
) -> ChipMasks:
    """Read step and compute step of one chip: its SCI from the working copy, then :func:`_chip_masks`."""
    crmask = masks[(info.rootname, extver)]
    assert crmask is not None  # exposures with a chip without a mask failed before
    own = {f.sci_extver: f for f in frames[info.rootname]}
    return _chip_masks(
        info,
        extver,
        read_chip_sci(copy, extver),
        crmask,
        blot=run.blot(info.rootname, extver),
        own=own[extver],
        others=others_of[info.rootname],
        coverage=coverages.get((info.rootname, extver)),
        hot=hot.get(extver),
        options=options,
    )
