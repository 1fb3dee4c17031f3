"""Render one visit: pointings, scene, exposures, FLC and truth files.

Random streams: ``default_rng([seed, visit_index, 0])`` draws the visit (target, roll, pointing
error, exposure time, scene); ``[seed, visit_index, k + 1, extver, 1]`` the CRs and
``[..., 2]`` the noise of exposure ``k``'s chip ``extver`` (:mod:`crlib.simulate.exposure` renders
and writes each exposure); ``[seed, visit_index, 0, 8]`` the crowding and structure of a resolved
galaxy (``SimEffects.crowded_resolved_galaxies``), ``[seed, visit_index, 0, 10]`` the grains of its
unresolved starlight (``SimEffects.surface_brightness_fluctuations``).
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
from crlib.simulate.cosmics import CosmicRayModel, mean_pixels_per_event
from crlib.simulate.detector import DARK_RATE_E_PER_S, FULL_WELL_E, Defects, chip_defects
from crlib.simulate.effects import SimEffects
from crlib.simulate.exposure import ExposureInputs, ExposureRender, render_exposure, write_exposure
from crlib.simulate.flcfile import ExposureMeta, mean_dark_e
from crlib.simulate.fluctuations import with_fluctuations
from crlib.simulate.geometry import ChipWindow, chip_windows, dither_pattern
from crlib.simulate.pointing import Pointing, nominal_pointing
from crlib.simulate.programs import GAIA_FIELD_TARGET, TARGETS, FilterSpec, rootname
from crlib.simulate.scene import Scene, build_scene, read_gaia_catalog
from crlib.simulate.subarray import aperture_window, draw_aperture
from crlib.simulate.template import Template, load_template
from crlib.simulate.visiteffects import ExposureEffects, VisitEffects, draw_visit_effects

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


@dataclass(frozen=True)
class _VisitLayout:
    """Which chip windows a visit reads out and how its files number them."""

    aperture: str | None
    windows: tuple[ChipWindow, ...]
    file_extvers: tuple[int, ...]
    anchor: tuple[int, float, float]


@dataclass(frozen=True)
class _VisitDraw:
    """What the visit stream ``[seed, visit_index, 0]`` draws before the scene."""

    target_name: str
    target_ra: float
    target_dec: float
    point_ra: float
    point_dec: float
    roll: float
    nominal: Pointing
    pa_v3: float
    visit_error: tuple[float, float]
    jitter_sigma: float
    jitter: np.ndarray
    exptime: float
    start_mjd: float


def _visit_layout(plan: VisitPlan) -> _VisitLayout:
    """The visit's windows: a subarray aperture (its own stream) or the chips of ``plan.size``."""
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
    if aperture:
        # an observer points a subarray's own reference point, its centre, at the target
        (window,) = windows
        anchor = (window.sci_extver, window.x0 + window.nx / 2.0, window.y0 + window.ny / 2.0)
    else:
        anchor_chip = next(c for c in PROFILE.chips if c.ccdchip == 1)
        anchor = (anchor_chip.sci_extver, PROFILE.chip_shape[1] / 2.0, 0.0)
    return _VisitLayout(aperture, tuple(windows), tuple(file_extvers), anchor)


def _draw_visit(
    plan: VisitPlan,
    rng: np.random.Generator,
    *,
    template: Template,
    anchor: tuple[int, float, float],
    gaia: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> _VisitDraw:
    """Target, roll, pointing error, jitter, exposure time and start, drawn from ``rng`` in this order."""
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
    return _VisitDraw(
        target_name=target_name,
        target_ra=target_ra,
        target_dec=target_dec,
        point_ra=point_ra,
        point_dec=point_dec,
        roll=roll,
        nominal=nominal,
        pa_v3=pa_v3,
        visit_error=visit_error,
        jitter_sigma=jitter_sigma,
        jitter=jitter,
        exptime=exptime,
        start_mjd=start_mjd,
    )


def _draw_scene_and_effects(
    plan: VisitPlan,
    rng: np.random.Generator,
    *,
    draw: _VisitDraw,
    windows: tuple[ChipWindow, ...],
    gaia: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[Scene, VisitEffects]:
    """The sky (visit stream, then its crowding stream) and the visit's effects (their own streams)."""
    frame = _visit_frame(draw.nominal)
    box = _scene_box(draw.nominal, frame, windows)
    scene = build_scene(
        rng,
        field_type=plan.field_type,
        frame=frame,
        box=box,
        zeropoint=plan.filter.ab_zeropoint,
        gaia=gaia,
        crowded_rng=(
            np.random.default_rng([plan.seed, plan.visit_index, 0, 8])
            if plan.effects.crowded_resolved_galaxies
            else None
        ),
    )
    if plan.effects.surface_brightness_fluctuations and scene.structure is not None:
        scene = with_fluctuations(
            scene,
            box,
            filter_spec=plan.filter,
            real_psf=plan.effects.real_psf,
            rng=np.random.default_rng([plan.seed, plan.visit_index, 0, 10]),
        )
    visit_effects = draw_visit_effects(
        plan.effects,
        seed=plan.seed,
        visit_index=plan.visit_index,
        exposures=plan.exposures,
        filters=(plan.filter, *plan.extra_filters),
        mjd=draw.start_mjd,
        windows=windows,
        profile=PROFILE,
        frame_centre=((box[0] + box[1]) / 2.0, (box[2] + box[3]) / 2.0),
        field_half_size_px=max(box[1] - box[0], box[3] - box[2]) / 2.0,
    )
    return scene, visit_effects


def _exposure_pointings(
    draw: _VisitDraw, k: int, dither: tuple[float, float], effect: ExposureEffects
) -> tuple[Pointing, Pointing, tuple[float, float]]:
    """Header pointing (nominal + dither), true pointing (+ error, roll, scale) and the error, px."""
    header_pointing = draw.nominal.moved_by_pixels(dither)
    error = (draw.visit_error[0] + float(draw.jitter[k, 0]), draw.visit_error[1] + float(draw.jitter[k, 1]))
    true_pointing = header_pointing.moved_by_pixels(error)
    if effect.roll_error_deg != 0.0 or effect.scale_error != 1.0:
        true_pointing = true_pointing.rotated_and_scaled(effect.roll_error_deg, effect.scale_error)
    return header_pointing, true_pointing, error


def _exposure_meta(
    plan: VisitPlan,
    k: int,
    *,
    draw: _VisitDraw,
    layout: _VisitLayout,
    effect: ExposureEffects,
    dither: tuple[float, float],
) -> ExposureMeta:
    """Header facts of exposure ``k`` (rootname, target, filter, times, dither as POSTARG)."""
    scale = PROFILE.plate_scale_arcsec
    return ExposureMeta(
        rootname=rootname(plan.visit, k),
        visit=plan.visit,
        proposal_id=plan.proposal_id,
        target_name=draw.target_name,
        target_ra=draw.target_ra,
        target_dec=draw.target_dec,
        filter=effect.filter,
        exptime_s=draw.exptime,
        expstart_mjd=draw.start_mjd + k * (draw.exptime + OVERHEAD_S) / 86400.0,
        pa_v3_deg=draw.pa_v3,
        postarg_arcsec=(dither[0] * scale, dither[1] * scale),
        field_type=plan.field_type,
        seed=plan.seed,
        size=plan.size,
        aperture=layout.aperture,
        file_extvers=layout.file_extvers,
    )


def _exposure_record(
    plan: VisitPlan,
    k: int,
    *,
    meta: ExposureMeta,
    draw: _VisitDraw,
    windows: tuple[ChipWindow, ...],
    effect: ExposureEffects,
    dither: tuple[float, float],
    error: tuple[float, float],
    header_pointing: Pointing,
    rendered: ExposureRender,
    flc_path: Path,
) -> dict[str, Any]:
    """The exposure's entry in ``visit.json`` (times, pointing, dither, error, CR and file facts)."""
    scale = PROFILE.plate_scale_arcsec
    exptime, expstart = meta.exptime_s, meta.expstart_mjd
    n_pixels = sum(w.nx * w.ny for w in windows)
    centre = header_pointing.anchor_sky()
    return {
        "rootname": meta.rootname,
        "exptime_s": exptime,
        "t_min": expstart,
        "t_max": expstart + exptime / 86400.0,
        "s_ra": math.degrees(math.atan2(centre[1], centre[0])) % 360.0,
        "s_dec": math.degrees(math.asin(centre[2])),
        "dither_arcsec": [dither[0] * scale, dither[1] * scale],
        "dither_px": [dither[0], dither[1]],
        "pointing_error_px": [error[0], error[1]],
        "jitter_px": [float(draw.jitter[k, 0]), float(draw.jitter[k, 1])],
        "filter": effect.filter.name,
        "effects": effect.as_dict(),
        "cr_events": rendered.events,
        "cr_pixel_fraction": float(sum(int(m.sum()) for m in rendered.masks) / n_pixels),
        "saturated_pixels": int(sum(int((c.dq & 256).astype(bool).sum()) for c in rendered.chips)),
        "size": flc_path.stat().st_size,
        "md5": _file_digest(flc_path),
        "seeds": {
            "cosmic_rays": [[plan.seed, plan.visit_index, k + 1, w.sci_extver, 1] for w in windows],
            "noise": [[plan.seed, plan.visit_index, k + 1, w.sci_extver, 2] for w in windows],
        },
    }


def _simulate_exposure(
    visit_dir: Path,
    plan: VisitPlan,
    k: int,
    dither: tuple[float, float],
    *,
    template: Template,
    layout: _VisitLayout,
    draw: _VisitDraw,
    scene: Scene,
    visit_effects: VisitEffects,
    dark: float,
    defects: dict[int, Defects],
) -> dict[str, Any]:
    """Render and write exposure ``k``; return its ``visit.json`` entry."""
    effect = visit_effects.exposures[k]
    header_pointing, true_pointing, error = _exposure_pointings(draw, k, dither, effect)
    cr_model = (
        replace(CR_MODEL, rate_per_cm2_s=CR_MODEL.rate_per_cm2_s * effect.cr_rate_factor)
        if effect.cr_rate_factor != 1.0
        else CR_MODEL
    )
    inputs = ExposureInputs(
        seed=plan.seed,
        visit_index=plan.visit_index,
        k=k,
        profile=PROFILE,
        effects=plan.effects,
        scene=scene,
        template=template,
        true_pointing=true_pointing,
        header_pointing=header_pointing,
        visit_effects=visit_effects,
        cr_model=cr_model,
        exptime=draw.exptime,
        sky_e=effect.filter.sky_e_per_s * draw.exptime,
        dark=dark,
        defects=defects,
    )
    rendered = render_exposure(inputs, layout.windows)
    meta = _exposure_meta(plan, k, draw=draw, layout=layout, effect=effect, dither=dither)
    flc_path = write_exposure(
        visit_dir,
        rendered,
        template=template,
        meta=meta,
        windows=layout.windows,
        mask_threshold_e=CR_MODEL.mask_threshold_e,
        with_artefacts=plan.effects.any,
    )
    return _exposure_record(
        plan,
        k,
        meta=meta,
        draw=draw,
        windows=layout.windows,
        effect=effect,
        dither=dither,
        error=error,
        header_pointing=header_pointing,
        rendered=rendered,
        flc_path=flc_path,
    )


def _visit_record(
    plan: VisitPlan,
    *,
    layout: _VisitLayout,
    draw: _VisitDraw,
    pattern: str,
    dark: float,
    scene: Scene,
    visit_effects: VisitEffects,
    exposures: list[dict[str, Any]],
) -> dict[str, Any]:
    """The content of ``visit.json``: every injected quantity of the visit and its exposures."""
    anchor = layout.anchor
    return {
        "visit": plan.visit,
        "proposal_id": plan.proposal_id,
        "field_type": plan.field_type,
        "filter": plan.filter.name,
        "target_name": draw.target_name,
        "target_ra": draw.target_ra,
        "target_dec": draw.target_dec,
        "size": plan.size,
        "aperture": layout.aperture,
        "windows": [
            {"sci_extver": w.sci_extver, "file_extver": e, "x0": w.x0, "y0": w.y0, "nx": w.nx, "ny": w.ny}
            for w, e in zip(layout.windows, layout.file_extvers, strict=True)
        ],
        "t_obs_release": plan.release_mjd,
        "pointing": {
            "ra_deg": draw.point_ra,
            "dec_deg": draw.point_dec,
            "roll_deg": draw.roll,
            "pa_v3_deg": draw.pa_v3,
        },
        "anchor": {"sci_extver": anchor[0], "x": anchor[1], "y": anchor[2], "frame": "full-chip, 0-based"},
        "pointing_error_px": math.hypot(*draw.visit_error),
        "visit_pointing_error_px": list(draw.visit_error),
        "pointing_error_convention": "true star pixel = header-WCS pixel + error (at the anchor)",
        "dither_pattern": pattern,
        "jitter_sigma_px": draw.jitter_sigma,
        "dither_convention": "a fixed star moves by +dither_px from exposure 0 to k (header WCS, anchor)",
        "exptime_s": draw.exptime,
        "psf_fwhm_px": plan.filter.psf_fwhm_px,
        "sky_e_per_pixel": plan.filter.sky_e_per_s * draw.exptime,
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


def render_visit(
    root: Path,
    plan: VisitPlan,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> dict[str, Any]:
    """Write a visit's FLC and truth files; return the content of its ``visit.json``.

    Draws happen in a fixed order (module docstring): the visit stream gives the target, roll,
    pointing error, jitter, exposure time and start, then the scene; every chip of every exposure
    has its own CR and noise streams.

    Parameters
    ----------
    root
        Archive directory; files go to ``root/<visit>/`` and ``root/<visit>/truth/``.
    plan
        The visit to simulate.
    progress
        ``progress(message, done, total)`` after each exposure.
    progress_offset, progress_total
        Added to the exposures done, and the total reported (default: ``plan.exposures``).

    Returns
    -------
    dict
        JSON-ready visit truth (pointing, dithers, errors, CR model, per-exposure facts).
    """
    template = load_template(PROFILE)
    rng = np.random.default_rng([plan.seed, plan.visit_index, 0])
    layout = _visit_layout(plan)
    gaia = read_gaia_catalog(plan.gaia_catalog) if plan.gaia_catalog is not None else None
    draw = _draw_visit(plan, rng, template=template, anchor=layout.anchor, gaia=gaia)
    scene, visit_effects = _draw_scene_and_effects(plan, rng, draw=draw, windows=layout.windows, gaia=gaia)
    pattern, dithers = dither_pattern(plan.exposures, dither=plan.dither)
    visit_dir = root / plan.visit
    (visit_dir / "truth").mkdir(parents=True, exist_ok=True)
    defects = {w.sci_extver: chip_defects(PROFILE, w) for w in layout.windows}
    dark = mean_dark_e(draw.exptime, DARK_RATE_E_PER_S)
    exposures: list[dict[str, Any]] = []
    for k, dither in enumerate(dithers):
        exposures.append(
            _simulate_exposure(
                visit_dir,
                plan,
                k,
                dither,
                template=template,
                layout=layout,
                draw=draw,
                scene=scene,
                visit_effects=visit_effects,
                dark=dark,
                defects=defects,
            )
        )
        if progress is not None:
            total = progress_total if progress_total is not None else plan.exposures
            progress(f"{plan.visit}: {exposures[-1]['rootname']}", progress_offset + k + 1, total)
    return _visit_record(
        plan,
        layout=layout,
        draw=draw,
        pattern=pattern,
        dark=dark,
        scene=scene,
        visit_effects=visit_effects,
        exposures=exposures,
    )
