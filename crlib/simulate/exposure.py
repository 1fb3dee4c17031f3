"""One exposure of a simulated visit: its chips rendered, read out, and written with their truth.

Every chip draws from its own streams, chip by chip in window order: ``default_rng([seed,
visit_index, k + 1, extver, 1])`` the cosmic rays and ``[..., 2]`` the read-out noise of exposure
``k``'s chip ``extver`` (:mod:`crlib.simulate.visit` draws everything visit-wide before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.simulate.artefacts import DQ_CR_DRIZ, artefact_mask, prior_drizzle_flags
from crlib.simulate.cosmics import CosmicRayModel, inject_cosmic_rays
from crlib.simulate.detector import Defects, amplifier_columns, read_out_detailed
from crlib.simulate.effects import SimEffects
from crlib.simulate.flcfile import ChipData, ExposureMeta, build_flc, write_fits, write_truth
from crlib.simulate.geometry import ChipWindow
from crlib.simulate.pointing import Pointing
from crlib.simulate.render import render_window, window_to_frame
from crlib.simulate.satellites import trail_image
from crlib.simulate.scene import Scene
from crlib.simulate.template import Template
from crlib.simulate.visiteffects import VisitEffects

#: A chip's truth: CR mask, CR charge (e-), noiseless model (e-), CR events, artefact mask or None.
ChipTruth = tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray | None]


@dataclass(frozen=True)
class ExposureInputs:
    """What every chip of exposure ``k`` is rendered from.

    Attributes
    ----------
    seed, visit_index, k
        Archive seed, visit index and exposure index: the chips' stream keys.
    profile
        Instrument profile of the chips (amplifiers, gains, CTE geometry).
    effects
        The archive effects switched on.
    scene, template
        The visit's sky and the FLC header template.
    true_pointing, header_pointing
        Where the telescope really pointed, and what the header WCS says.
    visit_effects
        The visit's per-exposure effects and dated detector state.
    cr_model
        The exposure's cosmic-ray model (rate scaled by its CR-rate factor).
    exptime, sky_e, dark
        Exposure time (s), sky level (e-) and mean dark (e-).
    defects
        Fixed detector defects per chip ``sci_extver``.
    """

    seed: int
    visit_index: int
    k: int
    profile: InstrumentProfile
    effects: SimEffects
    scene: Scene
    template: Template
    true_pointing: Pointing
    header_pointing: Pointing
    visit_effects: VisitEffects
    cr_model: CosmicRayModel
    exptime: float
    sky_e: float
    dark: float
    defects: dict[int, Defects]


@dataclass
class ExposureRender:
    """One exposure's chips (FLC arrays) and truth, chip by chip in window order."""

    chips: list[ChipData] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    charges: list[np.ndarray] = field(default_factory=list)
    models: list[np.ndarray] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    artefacts: list[np.ndarray | None] = field(default_factory=list)


def render_chip(inputs: ExposureInputs, window: ChipWindow) -> tuple[ChipData, ChipTruth]:
    """One chip of exposure ``inputs.k``: its FLC arrays and its truth.

    Parameters
    ----------
    inputs
        What the exposure is rendered from.
    window
        The chip window (full-frame ``sci_extver`` numbering).

    Returns
    -------
    tuple
        The chip's :class:`ChipData` and its :data:`ChipTruth` (mask, charge, model, events,
        artefacts).
    """
    effects = inputs.effects
    effect = inputs.visit_effects.exposures[inputs.k]
    chip = inputs.profile.chip(window.sci_extver)
    true_wcs = inputs.true_pointing.chip_wcs(window.sci_extver)
    model = render_window(
        inputs.scene,
        true_wcs,
        window,
        exptime_s=inputs.exptime,
        fwhm_px=effect.filter.psf_fwhm_px,
        psf_filter=effect.filter.name if effects.real_psf else None,
    )
    if effect.flux_factor != 1.0:
        model *= effect.flux_factor
    model += inputs.sky_e
    satellite = None
    if effect.satellite is not None:
        u, v = window_to_frame(true_wcs, window, inputs.scene.frame)
        satellite = trail_image(effect.satellite, u, v)
    stream = [inputs.seed, inputs.visit_index, inputs.k + 1, window.sci_extver]
    hits = inject_cosmic_rays(
        np.random.default_rng([*stream, 1]), window.shape, exptime_s=inputs.exptime, model=inputs.cr_model
    )
    header = inputs.template.primary
    dated = inputs.visit_effects.defects.get(window.sci_extver)
    readout = read_out_detailed(
        np.random.default_rng([*stream, 2]),
        model if satellite is None else model + satellite,
        cr_charge=hits.charge,
        defects=inputs.defects[window.sci_extver],
        amp_index=amplifier_columns(inputs.profile, window),
        gains=(float(header[f"ATODGN{chip.amps[0]}"]), float(header[f"ATODGN{chip.amps[1]}"])),
        read_noises=(float(header[f"READNSE{chip.amps[0]}"]), float(header[f"READNSE{chip.amps[1]}"])),
        exptime_s=inputs.exptime,
        dark_e=inputs.dark,
        dated=dated,
        cte=inputs.visit_effects.cte_setup(window, inputs.profile),
        background_e=inputs.sky_e + inputs.dark,
    )
    dq = readout.dq
    if effects.prior_drizzle_dq:
        unflagged = None
        if dated is not None:
            unflagged = np.zeros(window.shape, dtype=bool)
            hot = dated.unflagged & (dated.hot_rate * inputs.exptime >= 30.0)
            unflagged[dated.hot_y[hot], dated.hot_x[hot]] = True
        dq = dq | np.where(prior_drizzle_flags(readout.cr_charge, unflagged), DQ_CR_DRIZ, 0).astype(np.int16)
    crval, cd = inputs.header_pointing.chip_crval_cd(window.sci_extver)
    chip_data = ChipData(window, crval, cd, readout.sci, readout.err, dq, inputs.dark)
    artefacts = None
    if effects.any:
        artefacts = artefact_mask(
            window.shape,
            cte_trail=readout.cte_trail if effects.cte else None,
            hot=(dated.hot_y, dated.hot_x, dated.unflagged) if dated is not None else None,
            sink=(dated.sink_y, dated.sink_x) if dated is not None else None,
            satellite=satellite,
            bad_columns=inputs.defects[window.sci_extver].column_mask,
        )
    cr_mask = (readout.cr_charge >= inputs.cr_model.mask_threshold_e).astype(np.uint8)
    return chip_data, (cr_mask, readout.cr_charge, model.astype(np.float32), hits.n_events, artefacts)


def render_exposure(inputs: ExposureInputs, windows: tuple[ChipWindow, ...]) -> ExposureRender:
    """Every chip of exposure ``inputs.k``, in window order (each chip draws from its own streams)."""
    rendered = ExposureRender()
    for window in windows:
        chip_data, truth = render_chip(inputs, window)
        rendered.chips.append(chip_data)
        rendered.masks.append(truth[0])
        rendered.charges.append(truth[1])
        rendered.models.append(truth[2])
        rendered.events.append(truth[3])
        rendered.artefacts.append(truth[4])
    return rendered


def write_exposure(
    visit_dir: Path,
    rendered: ExposureRender,
    *,
    template: Template,
    meta: ExposureMeta,
    windows: tuple[ChipWindow, ...],
    mask_threshold_e: float,
    with_artefacts: bool,
) -> Path:
    """Write the exposure's FLC file and ``truth/<rootname>_simtruth.fits``; return the FLC path.

    Parameters
    ----------
    visit_dir
        ``<archive>/<visit>``; its ``truth/`` folder must exist.
    rendered
        The exposure's chips and truth.
    template, meta
        FLC header template and the exposure's header facts (``meta.file_extvers`` numbers the chips).
    windows
        The chip windows, in the order of ``rendered``.
    mask_threshold_e
        CR charge (e-) from which a pixel is in the truth mask, recorded in the truth file.
    with_artefacts
        Write the artefact masks (any archive effect on).
    """
    name = meta.rootname
    flc_path = visit_dir / f"{name}_flc.fits"
    write_fits(build_flc(template, meta, rendered.chips), flc_path, stamp=f"crlib.simulate seed {meta.seed}")
    write_truth(
        visit_dir / "truth" / f"{name}_simtruth.fits",
        rootname=name,
        windows=list(windows),
        extvers=list(meta.file_extvers),
        cr_masks=rendered.masks,
        cr_charges=rendered.charges,
        models=rendered.models,
        mask_threshold_e=mask_threshold_e,
        n_events=rendered.events,
        artefacts=rendered.artefacts if with_artefacts else None,
    )
    return flc_path
