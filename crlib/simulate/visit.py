"""Render one visit: pointings, scene, exposures, FLC and truth files.

Random streams: ``default_rng([seed, visit_index, 0])`` draws the visit (target, roll, pointing
error, exposure time, scene); ``[seed, visit_index, k + 1, extver, 1]`` the CRs and
``[..., 2]`` the noise of exposure ``k``'s chip ``extver``; ``[seed, visit_index, 0, 8]`` the crowding
and structure of a resolved galaxy (``SimEffects.crowded_resolved_galaxies``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from crlib.file_digest import file_hexdigest
from crlib.profiles import ACS_WFC
from crlib.simulate.artefacts import DQ_CR_DRIZ, artefact_mask, prior_drizzle_flags
from crlib.simulate.cosmics import CosmicRayModel, inject_cosmic_rays, mean_pixels_per_event
from crlib.simulate.detector import (
    DARK_RATE_E_PER_S,
    FULL_WELL_E,
    Defects,
    amplifier_columns,
    chip_defects,
    read_out_detailed,
)
from crlib.simulate.effects import SimEffects
from crlib.simulate.flcfile import ChipData, ExposureMeta, build_flc, mean_dark_e, write_fits, write_truth
from crlib.simulate.geometry import ChipWindow, chip_windows, dither_pattern
from crlib.simulate.pointing import Pointing, nominal_pointing
from crlib.simulate.programs import GAIA_FIELD_TARGET, TARGETS, FilterSpec, rootname
from crlib.simulate.render import render_window, window_to_frame
from crlib.simulate.satellites import trail_image
from crlib.simulate.scene import Scene, build_scene, read_gaia_catalog
from crlib.simulate.subarray import aperture_window, draw_aperture
from crlib.simulate.template import Template, load_template
from crlib.simulate.visiteffects import VisitEffects, draw_visit_effects

PROFILE = ACS_WFC
TYPICAL_EXPTIMES_S = {
    "globular_cluster": (339.0, 400.0, 500.0, 507.0),
    "extragalactic": (500.0, 560.0, 600.0, 696.0),
    "resolved_galaxy": (400.0, 480.0, 500.0, 550.0),
}
OVERHEAD_S = 160.0
VISIT_ERROR_RANGE_PX = (0.5, 1.5)
JITTER_SIGMA_PX = 0.15
#: Exposure-to-exposure pointing repeatability of an undithered (CR-SPLIT) visit: the telescope
#: stays on the same guide stars, so frames agree to ~1-2 mas (0.02-0.04 ACS/WFC pixels).
CR_SPLIT_JITTER_SIGMA_PX = 0.03
SCENE_MARGIN_PX = 80.0
CR_MODEL = CosmicRayModel(rate_per_cm2_s=PROFILE.cr_rate_per_cm2_s, pixel_area_cm2=PROFILE.pixel_area_cm2)

_mean_footprint: dict[CosmicRayModel, float] = {}


def cr_pixels_per_event(model: CosmicRayModel = CR_MODEL) -> float:
    """Mean masked pixels per CR event of ``model`` (Monte Carlo, cached)."""
    if model not in _mean_footprint:
        _mean_footprint[model] = mean_pixels_per_event(model)
    return _mean_footprint[model]


@dataclass(frozen=True)
class VisitPlan:
    """What to simulate for one visit."""

    visit: str
    proposal_id: int
    field_type: str
    filter: FilterSpec
    exposures: int
    size: str
    seed: int
    visit_index: int
    release_mjd: float
    start_mjd: float
    exptime_s: float | None
    gaia_catalog: Path | None
    dither: str = "pattern"
    effects: SimEffects = field(default_factory=SimEffects)
    extra_filters: tuple[FilterSpec, ...] = ()


def _visit_frame(pointing: Pointing) -> WCS:
    extver, x, y = pointing.anchor
    chip = pointing.chip_wcs(extver)
    ra, dec = chip.all_pix2world([[x, y]], 0)[0]
    jacobian = chip.pixel_scale_matrix  # CD including the linear part only
    frame = WCS(naxis=2)
    frame.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    frame.wcs.crval = [float(ra), float(dec)]
    frame.wcs.crpix = [1.0, 1.0]
    frame.wcs.cd = jacobian
    return frame


def _scene_box(
    pointing: Pointing, frame: WCS, windows: tuple[ChipWindow, ...]
) -> tuple[float, float, float, float]:
    us, vs = [], []
    for window in windows:
        wcs = pointing.chip_wcs(window.sci_extver)
        xs = np.array([window.x0, window.x0 + window.nx, window.x0 + window.nx, window.x0], dtype=float)
        ys = np.array([window.y0, window.y0, window.y0 + window.ny, window.y0 + window.ny], dtype=float)
        ra, dec = wcs.all_pix2world(xs, ys, 0)
        u, v = frame.wcs_world2pix(ra, dec, 0)
        us.extend(u)
        vs.extend(v)
    m = SCENE_MARGIN_PX
    return (min(us) - m, max(us) + m, min(vs) - m, max(vs) + m)


def _file_digest(path: Path) -> str:
    return file_hexdigest(path, "md5")


def _render_chip(
    plan: VisitPlan,
    k: int,
    window: ChipWindow,
    *,
    scene: Scene,
    template: Template,
    true_pointing: Pointing,
    header_pointing: Pointing,
    visit_effects: VisitEffects,
    cr_model: CosmicRayModel,
    exptime: float,
    sky_e: float,
    dark: float,
    defects: dict[int, Defects],
) -> tuple[ChipData, tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray | None]]:
    """One chip of exposure ``k``: its FLC arrays and its truth (mask, charge, model, events, artefacts)."""
    effects = plan.effects
    effect = visit_effects.exposures[k]
    chip = PROFILE.chip(window.sci_extver)
    true_wcs = true_pointing.chip_wcs(window.sci_extver)
    model = render_window(
        scene,
        true_wcs,
        window,
        exptime_s=exptime,
        fwhm_px=effect.filter.psf_fwhm_px,
        psf_filter=effect.filter.name if effects.real_psf else None,
    )
    if effect.flux_factor != 1.0:
        model *= effect.flux_factor
    model += sky_e
    satellite = None
    if effect.satellite is not None:
        u, v = window_to_frame(true_wcs, window, scene.frame)
        satellite = trail_image(effect.satellite, u, v)
    hits = inject_cosmic_rays(
        np.random.default_rng([plan.seed, plan.visit_index, k + 1, window.sci_extver, 1]),
        window.shape,
        exptime_s=exptime,
        model=cr_model,
    )
    header = template.primary
    dated = visit_effects.defects.get(window.sci_extver)
    readout = read_out_detailed(
        np.random.default_rng([plan.seed, plan.visit_index, k + 1, window.sci_extver, 2]),
        model if satellite is None else model + satellite,
        cr_charge=hits.charge,
        defects=defects[window.sci_extver],
        amp_index=amplifier_columns(PROFILE, window),
        gains=(float(header[f"ATODGN{chip.amps[0]}"]), float(header[f"ATODGN{chip.amps[1]}"])),
        read_noises=(float(header[f"READNSE{chip.amps[0]}"]), float(header[f"READNSE{chip.amps[1]}"])),
        exptime_s=exptime,
        dark_e=dark,
        dated=dated,
        cte=visit_effects.cte_setup(window, PROFILE),
        background_e=sky_e + dark,
    )
    dq = readout.dq
    if effects.prior_drizzle_dq:
        unflagged = None
        if dated is not None:
            unflagged = np.zeros(window.shape, dtype=bool)
            hot = dated.unflagged & (dated.hot_rate * exptime >= 30.0)
            unflagged[dated.hot_y[hot], dated.hot_x[hot]] = True
        dq = dq | np.where(prior_drizzle_flags(readout.cr_charge, unflagged), DQ_CR_DRIZ, 0).astype(np.int16)
    crval, cd = header_pointing.chip_crval_cd(window.sci_extver)
    chip_data = ChipData(window, crval, cd, readout.sci, readout.err, dq, dark)
    artefacts = None
    if effects.any:
        artefacts = artefact_mask(
            window.shape,
            cte_trail=readout.cte_trail if effects.cte else None,
            hot=(dated.hot_y, dated.hot_x, dated.unflagged) if dated is not None else None,
            sink=(dated.sink_y, dated.sink_x) if dated is not None else None,
            satellite=satellite,
            bad_columns=defects[window.sci_extver].column_mask,
        )
    cr_mask = (readout.cr_charge >= cr_model.mask_threshold_e).astype(np.uint8)
    return chip_data, (cr_mask, readout.cr_charge, model.astype(np.float32), hits.n_events, artefacts)


def render_visit(
    root: Path,
    plan: VisitPlan,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> dict[str, Any]:
    """Write a visit's FLC and truth files; return the content of its ``visit.json``.

    Parameters
    ----------
    root
        Archive directory; files go to ``root/<visit>/`` and ``root/<visit>/truth/``.
    plan
        The visit to simulate.
    progress
        ``progress(message, done, total)`` after each exposure.

    Returns
    -------
    dict
        JSON-ready visit truth (pointing, dithers, errors, CR model, per-exposure facts).
    """
    template = load_template(PROFILE)
    rng = np.random.default_rng([plan.seed, plan.visit_index, 0])
    aperture = draw_aperture(
        probability=plan.effects.subarray_probability,
        forced=plan.effects.subarray_aperture,
        size=plan.size,
        seed=plan.seed,
        visit_index=plan.visit_index,
    )
    windows = (aperture_window(PROFILE, aperture),) if aperture else chip_windows(PROFILE, plan.size)
    # A subarray file numbers its chip EXTVER 1 (WFC1 is SCI,2 in a full-frame file).
    file_extvers = (
        [index + 1 for index in range(len(windows))] if aperture else [w.sci_extver for w in windows]
    )
    anchor_chip = next(c for c in PROFILE.chips if c.ccdchip == 1)
    anchor = (anchor_chip.sci_extver, PROFILE.chip_shape[1] / 2.0, 0.0)

    gaia = read_gaia_catalog(plan.gaia_catalog) if plan.gaia_catalog is not None else None
    if gaia is not None:
        target_name = GAIA_FIELD_TARGET
        target_ra, target_dec = float(np.median(gaia[0])), float(np.median(gaia[1]))
        point_ra, point_dec = target_ra, target_dec
    else:
        targets = TARGETS[plan.field_type]
        target = targets[plan.visit_index % len(targets)]
        target_name, target_ra, target_dec = target.name, target.ra_deg, target.dec_deg
        scatter = rng.uniform(-2.0, 2.0, 2) / 60.0
        point_dec = target_dec + scatter[1]
        point_ra = (target_ra + scatter[0] / max(math.cos(math.radians(point_dec)), 0.05)) % 360.0
    roll = float(rng.uniform(0.0, 360.0))
    nominal = nominal_pointing(template, anchor, ra_deg=point_ra, dec_deg=point_dec, roll_deg=roll)
    pa_v3 = (float(template.primary["PA_V3"]) + nominal.position_angle_change_deg()) % 360.0

    error_size = rng.uniform(*VISIT_ERROR_RANGE_PX)
    error_angle = rng.uniform(0.0, 2.0 * math.pi)
    visit_error = (error_size * math.cos(error_angle), error_size * math.sin(error_angle))
    jitter_sigma = CR_SPLIT_JITTER_SIGMA_PX if plan.dither == "none" else JITTER_SIGMA_PX
    jitter = rng.normal(0.0, jitter_sigma, (plan.exposures, 2))
    exptime = (
        plan.exptime_s
        if plan.exptime_s is not None
        else float(rng.choice(TYPICAL_EXPTIMES_S[plan.field_type]))
    )
    start_mjd = plan.start_mjd + float(rng.uniform(0.0, 0.5))

    frame = _visit_frame(nominal)
    scene = build_scene(
        rng,
        field_type=plan.field_type,
        frame=frame,
        box=_scene_box(nominal, frame, windows),
        zeropoint=plan.filter.ab_zeropoint,
        gaia=gaia,
        crowded_rng=(
            np.random.default_rng([plan.seed, plan.visit_index, 0, 8])
            if plan.effects.crowded_resolved_galaxies
            else None
        ),
    )
    box = _scene_box(nominal, frame, windows)
    visit_effects = draw_visit_effects(
        plan.effects,
        seed=plan.seed,
        visit_index=plan.visit_index,
        exposures=plan.exposures,
        filters=(plan.filter, *plan.extra_filters),
        mjd=start_mjd,
        windows=windows,
        profile=PROFILE,
        frame_centre=((box[0] + box[1]) / 2.0, (box[2] + box[3]) / 2.0),
        field_half_size_px=max(box[1] - box[0], box[3] - box[2]) / 2.0,
    )
    pattern, dithers = dither_pattern(plan.exposures, dither=plan.dither)
    scale = PROFILE.plate_scale_arcsec
    visit_dir = root / plan.visit
    (visit_dir / "truth").mkdir(parents=True, exist_ok=True)
    defects = {w.sci_extver: chip_defects(PROFILE, w) for w in windows}
    dark = mean_dark_e(exptime, DARK_RATE_E_PER_S)
    exposures: list[dict[str, Any]] = []
    for k, dither in enumerate(dithers):
        name = rootname(plan.visit, k)
        effect = visit_effects.exposures[k]
        header_pointing = nominal.moved_by_pixels(dither)
        error = (visit_error[0] + float(jitter[k, 0]), visit_error[1] + float(jitter[k, 1]))
        true_pointing = header_pointing.moved_by_pixels(error)
        if effect.roll_error_deg != 0.0 or effect.scale_error != 1.0:
            true_pointing = true_pointing.rotated_and_scaled(effect.roll_error_deg, effect.scale_error)
        cr_model = (
            replace(CR_MODEL, rate_per_cm2_s=CR_MODEL.rate_per_cm2_s * effect.cr_rate_factor)
            if effect.cr_rate_factor != 1.0
            else CR_MODEL
        )
        sky_e = effect.filter.sky_e_per_s * exptime
        chips: list[ChipData] = []
        masks, charges, models, events, artefacts = [], [], [], [], []
        for window in windows:
            chip_data, truth = _render_chip(
                plan,
                k,
                window,
                scene=scene,
                template=template,
                true_pointing=true_pointing,
                header_pointing=header_pointing,
                visit_effects=visit_effects,
                cr_model=cr_model,
                exptime=exptime,
                sky_e=sky_e,
                dark=dark,
                defects=defects,
            )
            chips.append(chip_data)
            masks.append(truth[0])
            charges.append(truth[1])
            models.append(truth[2])
            events.append(truth[3])
            artefacts.append(truth[4])
        expstart = start_mjd + k * (exptime + OVERHEAD_S) / 86400.0
        meta = ExposureMeta(
            rootname=name,
            visit=plan.visit,
            proposal_id=plan.proposal_id,
            target_name=target_name,
            target_ra=target_ra,
            target_dec=target_dec,
            filter=effect.filter,
            exptime_s=exptime,
            expstart_mjd=expstart,
            pa_v3_deg=pa_v3,
            postarg_arcsec=(dither[0] * scale, dither[1] * scale),
            field_type=plan.field_type,
            seed=plan.seed,
            size=plan.size,
            aperture=aperture,
            file_extvers=tuple(file_extvers),
        )
        flc_path = visit_dir / f"{name}_flc.fits"
        write_fits(build_flc(template, meta, chips), flc_path, stamp=f"crlib.simulate seed {plan.seed}")
        write_truth(
            visit_dir / "truth" / f"{name}_simtruth.fits",
            rootname=name,
            windows=list(windows),
            extvers=file_extvers,
            cr_masks=masks,
            cr_charges=charges,
            models=models,
            mask_threshold_e=CR_MODEL.mask_threshold_e,
            n_events=events,
            artefacts=artefacts if plan.effects.any else None,
        )
        n_pixels = sum(w.nx * w.ny for w in windows)
        centre = header_pointing.anchor_sky()
        s_ra = math.degrees(math.atan2(centre[1], centre[0])) % 360.0
        s_dec = math.degrees(math.asin(centre[2]))
        exposures.append(
            {
                "rootname": name,
                "exptime_s": exptime,
                "t_min": expstart,
                "t_max": expstart + exptime / 86400.0,
                "s_ra": s_ra,
                "s_dec": s_dec,
                "dither_arcsec": [dither[0] * scale, dither[1] * scale],
                "dither_px": [dither[0], dither[1]],
                "pointing_error_px": [error[0], error[1]],
                "jitter_px": [float(jitter[k, 0]), float(jitter[k, 1])],
                "filter": effect.filter.name,
                "effects": effect.as_dict(),
                "cr_events": events,
                "cr_pixel_fraction": float(sum(int(m.sum()) for m in masks) / n_pixels),
                "saturated_pixels": int(sum(int((c.dq & 256).astype(bool).sum()) for c in chips)),
                "size": flc_path.stat().st_size,
                "md5": _file_digest(flc_path),
                "seeds": {
                    "cosmic_rays": [[plan.seed, plan.visit_index, k + 1, w.sci_extver, 1] for w in windows],
                    "noise": [[plan.seed, plan.visit_index, k + 1, w.sci_extver, 2] for w in windows],
                },
            }
        )
        if progress is not None:
            total = progress_total if progress_total is not None else plan.exposures
            progress(f"{plan.visit}: {name}", progress_offset + k + 1, total)

    return {
        "visit": plan.visit,
        "proposal_id": plan.proposal_id,
        "field_type": plan.field_type,
        "filter": plan.filter.name,
        "target_name": target_name,
        "target_ra": target_ra,
        "target_dec": target_dec,
        "size": plan.size,
        "aperture": aperture,
        "windows": [
            {"sci_extver": w.sci_extver, "file_extver": e, "x0": w.x0, "y0": w.y0, "nx": w.nx, "ny": w.ny}
            for w, e in zip(windows, file_extvers, strict=True)
        ],
        "t_obs_release": plan.release_mjd,
        "pointing": {"ra_deg": point_ra, "dec_deg": point_dec, "roll_deg": roll, "pa_v3_deg": pa_v3},
        "anchor": {"sci_extver": anchor[0], "x": anchor[1], "y": anchor[2], "frame": "full-chip, 0-based"},
        "pointing_error_px": math.hypot(*visit_error),
        "visit_pointing_error_px": list(visit_error),
        "pointing_error_convention": "true star pixel = header-WCS pixel + error (at the anchor)",
        "dither_pattern": pattern,
        "jitter_sigma_px": jitter_sigma,
        "dither_convention": "a fixed star moves by +dither_px from exposure 0 to k (header WCS, anchor)",
        "exptime_s": exptime,
        "psf_fwhm_px": plan.filter.psf_fwhm_px,
        "sky_e_per_pixel": plan.filter.sky_e_per_s * exptime,
        "mean_dark_e": dark,
        "full_well_e": FULL_WELL_E,
        "cosmic_rays": {
            "rate_per_cm2_s": CR_MODEL.rate_per_cm2_s,
            "pixel_area_cm2": CR_MODEL.pixel_area_cm2,
            "mask_threshold_e": CR_MODEL.mask_threshold_e,
            "pixels_per_event": cr_pixels_per_event(),
            "expected_pixel_fraction_per_s": CR_MODEL.rate_per_cm2_s
            * CR_MODEL.pixel_area_cm2
            * cr_pixels_per_event(),
        },
        "scene": scene.summary,
        "effects": visit_effects.summary(),
        "gaia_catalog": str(plan.gaia_catalog) if plan.gaia_catalog is not None else None,
        "seeds": {
            "archive": plan.seed,
            "visit_index": plan.visit_index,
            "visit_stream": [plan.seed, plan.visit_index, 0],
        },
        "exposures": exposures,
    }
