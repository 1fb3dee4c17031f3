"""Multi-frame ground truth for one undithered (CR-SPLIT) visit, with the same quality gates as drizzle.

:func:`multiframe_visit_truth` checks that the exposures really share one pixel grid (their header
WCSs agree to a fraction of a pixel -- a dithered visit is refused with the reason, since the
stack statistics would flag every star that moved), runs :func:`crlib.truth.multiframe.compute_crmasks`
chip by chip, builds each exposure's valid mask (DQ-good in every frame, saturation dilated 7x7,
optional border), and applies :func:`crlib.truth.quality.assess`: star cores found in the
CR-cleaned median must not be flagged, the CR event rate must be plausible for the exposure time,
and enough of the chip must be valid.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crlib.formats.exposures import ExposureInfo
from crlib.provenance import code_version
from crlib.records import TruthResult
from crlib.truth.multiframe import CrMaskOptions, CrMasks, compute_crmasks, write_diagnostic_plots
from crlib.truth.outcome import ChipMasks, artefact_entries, chip_quality, failed_all, without_artefacts
from crlib.truth.quality import QualityThresholds, assess, gate_parameters, star_core_mask

log = logging.getLogger(__name__)

#: Largest header-WCS offset between exposures (pixels) still treated as one pixel grid. Dither
#: steps are >= 2 px (LINE/BOX); CR-SPLIT frames agree to a few mas (< 0.1 px).
MAX_FRAME_OFFSET_PX = 0.25

#: Signal-proportional noise term for frames that are not perfectly registered (see
#: :attr:`~crlib.truth.multiframe.CrMaskOptions.scale_noise_percent`). calacs uses 30 % for
#: ACS/WFC CR-SPLITs (CRREJTAB 29p1548cj). On a small simulated globular-cluster CR-SPLIT visit
#: (4 frames, 0.03 px jitter, seed 3) with drizzlepac's real F606W PSF, recall > 50 e- / FPR /
#: star-core pixels flagged: 10 %: 0.976 / 1.4e-4 / 0.60 % (`suspect`: 3.4 % of core pixels);
#: 20 %: 0.960 / 5.0e-5 / 0.19 %; 30 %: 0.938 / 3.0e-5 / 0.09 %. With Moffat stars 10 % was
#: enough (0.975 / 1.4e-5 / 0); a larger value misses more of the real CRs that land on stars.
#: Since the term is taken from the stack's minimum (2026-12-05), small realistic 3-frame visits
#: (seed 7; recall > 50 e- / FPR, globular cluster, extragalactic, resolved galaxy): 20 %: 0.964 /
#: 3.9e-5, 0.981 / 1.8e-5, 0.862 / 1.3e-5; 25 %: 0.958 / 3.3e-5, 0.980 / 1.8e-5, 0.850 / 1.2e-5;
#: 30 %: 0.953 / 2.9e-5, 0.978 / 1.8e-5, 0.839 / 1.1e-5. At full size 20 % meets 3e-5 (docs/truth.md).
SCALE_NOISE_PERCENT = 20.0

#: Significance at which a detection grows into its neighbours (driz_cr's first threshold is
#: 3.5 of ``driz_cr_snr = "3.5 3.0"``), in sigma of a neighbour's excess over the other frames.
#: Small realistic 3-frame visits (seed 7, as above): 3.0: 0.972 / 6.2e-5, 0.990 / 6.5e-5, 0.895 /
#: 2.7e-5; 3.5: 0.964 / 3.9e-5, 0.981 / 1.8e-5, 0.862 / 1.3e-5; 4.0: 0.955 / 3.3e-5, 0.968 /
#: 7.9e-6, 0.825 / 1.0e-5.
GROW_SNR = 3.5


def frame_offsets_px(infos: Sequence[ExposureInfo], *, step: int = 256) -> dict[str, float]:
    """Largest offset (pixels) of each exposure's pixel grid from the first exposure's, by header WCS.

    Parameters
    ----------
    infos
        The visit's exposures; the first is the reference.
    step
        Spacing of the pixel grid the WCSs are compared on, pixels.

    Returns
    -------
    dict
        ``{rootname: offset_px}`` (0 for the reference), the maximum over every chip's grid.
    """
    from astropy.io import fits
    from stwcs.wcsutil import HSTWCS

    def chip_wcs(path: Path) -> dict[int, HSTWCS]:
        with fits.open(path, memmap=False) as hdul:
            return {extver: HSTWCS(hdul, ext=("SCI", extver)) for extver in infos[0].sci_extvers}

    reference = chip_wcs(infos[0].path)
    offsets = {infos[0].rootname: 0.0}
    for info in infos[1:]:
        other = chip_wcs(info.path)
        worst = 0.0
        for extver, w0 in reference.items():
            nx, ny = w0.pixel_shape
            gx, gy = np.meshgrid(np.arange(0, nx, step, dtype=float), np.arange(0, ny, step, dtype=float))
            ra, dec = w0.all_pix2world(gx.ravel(), gy.ravel(), 0)
            x, y = other[extver].all_world2pix(ra, dec, 0)
            worst = max(worst, float(np.max(np.hypot(x - gx.ravel(), y - gy.ravel()))))
        offsets[info.rootname] = worst
    return offsets


def _gate_frames(infos: Sequence[ExposureInfo], max_offset_px: float) -> dict[str, float] | str:
    """Gate step: whether the exposures are an undithered set the stack statistics can compare.

    Returns the frame offsets (:func:`frame_offsets_px`, ``{rootname: px}``) when there are at
    least 3 exposures of one chip shape, none offset by more than ``max_offset_px``; otherwise the
    reason every exposure fails.
    """
    if len(infos) < 3:
        return f"the multi-frame method needs >= 3 equivalent exposures, the visit has {len(infos)}"
    if len({i.chip_shape for i in infos}) != 1:
        return "exposures differ in chip shape"
    offsets = frame_offsets_px(infos)
    if max(offsets.values()) > max_offset_px:
        moved = ", ".join(f"{root} {off:.2f} px" for root, off in offsets.items() if off > max_offset_px)
        return (
            f"exposures are dithered ({moved} from {infos[0].rootname}; limit {max_offset_px} px): "
            "the multi-frame method needs an undithered CR-SPLIT set; use the drizzle method"
        )
    return offsets


def _mask_options(infos: Sequence[ExposureInfo], options: CrMaskOptions | None) -> CrMaskOptions:
    """The method's parameters: ``options`` or the defaults (read noise, e-, the headers' mean).

    Exposures of different exposure times get flux factors ``exptime / median(exptime)`` unless
    ``options`` sets them.
    """
    base = options or CrMaskOptions(
        read_noise=float(np.mean([i.read_noise_e for i in infos])) or 4.0,
        scale_noise_percent=SCALE_NOISE_PERCENT,
        grow_snr=GROW_SNR,
    )
    exptimes = np.array([i.exptime_s for i in infos])
    if base.flux_factor == "none" and np.ptp(exptimes) > 0:
        factors = tuple(float(e / np.median(exptimes)) for e in exptimes)
        base = dataclasses.replace(base, flux_factor=factors)
    return base


def _read_stack(infos: Sequence[ExposureInfo], extver: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read step: one chip of every exposure, float32 (ny, nx) e-, and its good pixels, bool (ny, nx).

    Good pixels are finite and carry no DQ flag apart from the CR bits 4096/8192: the valid-pixel
    rule of the drizzle method (:mod:`crlib.truth.validmask`). Hot and warm pixels (16/64), which
    drizzle uses, are not good here: a warm pixel's dark charge varies between frames as a CR's
    would (they made a tenth of the multi-frame false positives on a simulated extragalactic visit).
    The few non-finite pixels (``read_exposure`` refuses more) are replaced by the frame's median
    so that the stack statistics stay finite.
    """
    from astropy.io import fits

    from crlib.formats.dq import CR_DQ_BITS, dq_good

    frames, goods = [], []
    for info in infos:
        with fits.open(info.path, memmap=False) as hdul:
            frame = np.asarray(hdul["SCI", extver].data, dtype=np.float32)
            finite = np.isfinite(frame)
            if not finite.all():  # a few NaN/Inf (read_exposure refuses more): bad pixels
                frame = np.where(finite, frame, np.float32(np.median(frame[finite])))
            frames.append(frame)
            goods.append(dq_good(hdul["DQ", extver].data, ignored_bits=CR_DQ_BITS) & finite)
    return frames, goods


def _stack_chips(
    infos: Sequence[ExposureInfo],
    extver: int,
    frames: list[np.ndarray],
    goods: list[np.ndarray],
    result: CrMasks,
    border_px: int,
) -> list[ChipMasks]:
    """Compute step: each exposure's masks and gate numbers for one chip of the stack.

    The valid mask is the pixels good in every frame (``goods``, bool (ny, nx)), inside the border
    and not saturated (dilated 7x7) in this frame; satellite trails, flagged in one frame only like
    CRs, are kept out of both masks. Star cores come from the CR-cleaned median
    (``result.mediancr``, e-).
    """
    from crlib.metrics.pixels import inside_border
    from crlib.truth.validmask import saturation_mask

    profile = infos[0].profile
    common = np.logical_and.reduce(goods) & inside_border(frames[0].shape, border_px)
    cores = star_core_mask(result.mediancr, valid=common, saturation_e=profile.saturation_e)
    chips = []
    for k, info in enumerate(infos):
        valid = common & ~saturation_mask(frames[k], level_e=profile.saturation_e)
        flagged_u8, valid_u8, counts = without_artefacts(result.frame_masks[k].astype(bool), valid)
        flagged, valid = flagged_u8.astype(bool), valid_u8.astype(bool)
        quality = chip_quality(
            extver, flagged, valid, cores & valid, exptime_s=info.exptime_s, profile=profile
        )
        chips.append(ChipMasks(flagged_u8, valid_u8, quality, counts))
    return chips


def _exposure_result(
    info: ExposureInfo,
    chips: list[ChipMasks],
    *,
    provenance: dict[str, object],
    frame_offset_px: float,
    thresholds: QualityThresholds | None,
    out_dir: Path,
) -> TruthResult:
    """Gate and write step of one exposure: assess its chips, write its product, build its record.

    ``provenance`` holds the visit's header keywords (method settings, ``MAXOFFPX``); the record's
    parameters are their lower-case names with the status, the artefact counts, the exposure's
    ``frame_offset_px`` and the chips' gate numbers.
    """
    from crlib.truth.product import write_exposure_truth

    qualities = [c.quality for c in chips]
    status, reasons = assess(
        qualities,
        expected_rate_per_cm2_s=info.profile.cr_rate_per_cm2_s,
        alignment_rms_px=None,
        alignment_status=None,
        thresholds=thresholds,
    )
    artefact_parameters, artefact_header = artefact_entries([c.artefacts or {} for c in chips])
    header = {**provenance, "STATUS": status, **artefact_header}
    parameters: dict[str, object] = {
        **{k.lower(): v for k, v in header.items()},
        "frame_offset_px": frame_offset_px,
        **artefact_parameters,
        **gate_parameters(qualities),
    }
    record = TruthResult(info.rootname, "multiframe", status, None, reasons=reasons, parameters=parameters)
    result = write_exposure_truth(record, chips, header=header, out_dir=out_dir)
    log.info("multiframe truth %s: %s %s", info.rootname, status, "; ".join(reasons))
    return result


def multiframe_visit_truth(
    infos: Sequence[ExposureInfo],
    *,
    out_dir: Path,
    options: CrMaskOptions | None = None,
    thresholds: QualityThresholds | None = None,
    border_px: int = 0,
    max_offset_px: float = MAX_FRAME_OFFSET_PX,
    plots: bool = False,
) -> list[TruthResult]:
    """Multi-frame truth for the exposures of one undithered visit (one :class:`TruthResult` each).

    The steps: gate the frames (:func:`_gate_frames`), then per chip read the stack
    (:func:`_read_stack`), run :func:`~crlib.truth.multiframe.compute_crmasks` and build each
    exposure's masks (:func:`_stack_chips`); finally gate and write each exposure
    (:func:`_exposure_result`).

    Parameters
    ----------
    infos
        The visit's readable exposures.
    out_dir
        Where ``<rootname>_crtruth.fits`` (and diagnostic PNGs) go.
    options
        Method parameters (gain 1 for electron images; read noise defaults to the headers' mean).
    thresholds
        Quality-gate limits (default :class:`~crlib.truth.quality.QualityThresholds`).
    border_px
        Pixels discarded along the chip edges in the valid mask.
    max_offset_px
        Exposures whose header WCS is offset by more than this from the first one's make the
        visit "dithered": every exposure fails with that reason (use the drizzle method).
    plots
        Write the diagnostic diagrams as PNGs.

    Returns
    -------
    list of TruthResult
        Status ``ok | suspect | failed`` with the gates' reasons; parameters hold the method's
        settings, the frame offsets and the per-chip gate numbers.
    """
    offsets = _gate_frames(infos, max_offset_px)
    if isinstance(offsets, str):
        return failed_all(infos, "multiframe", offsets)
    base = _mask_options(infos, options)
    chips: dict[str, list[ChipMasks]] = {i.rootname: [] for i in infos}
    for extver in infos[0].sci_extvers:
        frames, goods = _read_stack(infos, extver)
        result = compute_crmasks(frames, base)
        if plots:
            write_diagnostic_plots(result, frames, out_dir, prefix=f"{infos[0].rootname[:6]}_sci{extver}")
        for info, chip in zip(
            infos, _stack_chips(infos, extver, frames, goods, result, border_px), strict=True
        ):
            chips[info.rootname].append(chip)
    provenance: dict[str, object] = {
        "METHOD": "multiframe",
        "NEXP": len(infos),
        "RDNOISE": base.read_noise,
        "DILATION": base.dilation,
        "MINMAXRN": base.minimum_max2d_rnoise,
        "SCALENSE": base.scale_noise_percent,
        "GROWSNR": base.grow_snr,
        "MAXOFFPX": round(max(offsets.values()), 4),
        "BORDER": border_px,
        "CRLIBVER": code_version(),
    }
    return [
        _exposure_result(
            info,
            chips[info.rootname],
            provenance=provenance,
            frame_offset_px=offsets[info.rootname],
            thresholds=thresholds,
            out_dir=out_dir,
        )
        for info in infos
    ]
