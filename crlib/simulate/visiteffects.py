"""Draw a visit's archive effects (:class:`~crlib.simulate.effects.SimEffects`) per exposure and chip.

All draws come from their own stream ``default_rng([seed, visit_index, 0, 7])``, so a visit
simulated without effects is bit-for-bit the basic simulator's, and switching one effect on does
not move any other random draw of the visit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.simulate.cte import chip_transfers, years_since_install
from crlib.simulate.defects import ANNEAL_CYCLE_DAYS, DatedDefects, dated_defects
from crlib.simulate.detector import CteSetup
from crlib.simulate.effects import SimEffects
from crlib.simulate.geometry import ChipWindow
from crlib.simulate.programs import FilterSpec
from crlib.simulate.satellites import SatelliteTrail, draw_trail

#: Per-exposure roll error (deg, 1 sigma) and plate-scale error (1 sigma) of the true pointing.
#: Guide-star roll control keeps exposures of a visit within a few mas at the field edge; the
#: velocity-aberration scale (``VAFACTOR``) changes by ~1e-5 within an orbit.
ROLL_SIGMA_DEG = 0.0015
SCALE_SIGMA = 5e-6
#: The CR-rate factor is clipped to this range (real 200 s UVIS rates: 1.2-1.6x the nominal one).
CR_RATE_FACTOR_RANGE = (0.5, 2.5)


@dataclass(frozen=True)
class ExposureEffects:
    """What the effects do to one exposure.

    Attributes
    ----------
    filter
        The exposure's filter.
    flux_factor
        Scene flux relative to the visit's first filter (colour-free: zero-point ratio).
    cr_rate_factor
        CR rate relative to the profile's.
    roll_error_deg, scale_error
        Roll (deg) and plate-scale factor of the true pointing relative to the header.
    satellite
        The exposure's satellite trail, if any.
    """

    filter: FilterSpec
    flux_factor: float = 1.0
    cr_rate_factor: float = 1.0
    roll_error_deg: float = 0.0
    scale_error: float = 1.0
    satellite: SatelliteTrail | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts for ``visit.json``."""
        return {
            "filter": self.filter.name,
            "cr_rate_factor": self.cr_rate_factor,
            "roll_error_deg": self.roll_error_deg,
            "scale_error": self.scale_error,
            "satellite": self.satellite.as_dict() if self.satellite is not None else None,
        }


@dataclass(frozen=True)
class VisitEffects:
    """Effects of one visit: per exposure, and the detector state at its date."""

    effects: SimEffects
    exposures: list[ExposureEffects]
    days_since_anneal: float
    years_since_install: float
    defects: dict[int, DatedDefects] = field(default_factory=dict)

    def cte_setup(self, window: ChipWindow, profile: InstrumentProfile) -> CteSetup | None:
        """CTE of a chip window (``None`` when CTE is off)."""
        if not self.effects.cte:
            return None
        chip = profile.chip(window.sci_extver)
        register_at_top = chip.ccdchip == 1  # WFC1 (SCI,2) is read out at its top rows
        transfers = chip_transfers(window.y0, window.ny, register_at_top=register_at_top)
        return CteSetup(transfers, -1 if register_at_top else 1, self.years_since_install)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for ``visit.json``."""
        return {
            "switches": self.effects.as_dict(),
            "days_since_anneal": self.days_since_anneal,
            "years_since_install": self.years_since_install,
            "hot_pixels": {str(k): int(d.hot_x.size) for k, d in self.defects.items()},
            "unflagged_hot_pixels": {str(k): int(d.unflagged.sum()) for k, d in self.defects.items()},
            "sink_pixels": {str(k): int(d.sink_x.size) for k, d in self.defects.items()},
        }


def exposure_filters(filters: tuple[FilterSpec, ...], exposures: int, per_visit: int) -> list[FilterSpec]:
    """Filter of each exposure: ``per_visit`` filters in consecutive blocks (first block longest)."""
    used = filters[: max(1, min(per_visit, len(filters)))]
    blocks = np.array_split(np.arange(exposures), len(used))
    out: list[FilterSpec] = []
    for spec, block in zip(used, blocks, strict=True):
        out.extend([spec] * len(block))
    return out


def draw_visit_effects(
    effects: SimEffects,
    *,
    seed: int,
    visit_index: int,
    exposures: int,
    filters: tuple[FilterSpec, ...],
    mjd: float,
    windows: tuple[ChipWindow, ...],
    profile: InstrumentProfile,
    frame_centre: tuple[float, float],
    field_half_size_px: float,
) -> VisitEffects:
    """Draw every effect of one visit.

    Parameters
    ----------
    effects
        Switches.
    seed, visit_index
        Identify the visit's effect stream.
    exposures
        Exposures in the visit.
    filters
        The visit's filters (first: the scene's); only ``effects.filters_per_visit`` are used.
    mjd
        Observation date (CTE and defect populations grow with it).
    windows
        The chip windows simulated.
    profile
        Instrument profile.
    frame_centre, field_half_size_px
        Middle of the field on the visit frame and half its size (satellite trails cross it).
    """
    rng = np.random.default_rng([seed, visit_index, 0, 7])
    per_exposure_filter = exposure_filters(filters, exposures, effects.filters_per_visit)
    first = filters[0]
    days = float(rng.uniform(0.0, ANNEAL_CYCLE_DAYS))
    out: list[ExposureEffects] = []
    for k in range(exposures):
        spec = per_exposure_filter[k]
        cr_factor = 1.0
        if effects.cr_rate_sigma > 0:
            draw = math.exp(rng.normal(0.0, effects.cr_rate_sigma))
            cr_factor = float(np.clip(draw, *CR_RATE_FACTOR_RANGE))
        roll, scale = 0.0, 1.0
        if effects.rotation_scale_errors:
            roll = float(rng.normal(0.0, ROLL_SIGMA_DEG))
            scale = float(1.0 + rng.normal(0.0, SCALE_SIGMA))
        satellite = None
        lucky = rng.random() < effects.satellite_probability
        if lucky or k in effects.satellite_exposures:
            satellite = draw_trail(rng, frame_centre, field_half_size_px)
        out.append(
            ExposureEffects(
                filter=spec,
                flux_factor=10.0 ** (0.4 * (spec.ab_zeropoint - first.ab_zeropoint)),
                cr_rate_factor=cr_factor,
                roll_error_deg=roll,
                scale_error=scale,
                satellite=satellite,
            )
        )
    defects = (
        {w.sci_extver: dated_defects(profile, w, mjd=mjd, days_since_anneal=days) for w in windows}
        if effects.dated_defects
        else {}
    )
    return VisitEffects(effects, out, days, years_since_install(mjd), defects)
