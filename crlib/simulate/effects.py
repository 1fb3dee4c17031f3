"""Switchable archive effects of the simulator: which realism to add on top of the basic visit.

:class:`SimEffects` holds one switch (and its main number) per effect; :meth:`SimEffects.basic`
is the original simulator (every effect off, the default), :meth:`SimEffects.realistic` turns every
effect on with the values documented, each with its source, in ``docs/simulator.md``:

* ``real_psf``: the per-filter ACS/WFC Tiny Tim PSFs drizzlepac ships instead of a Moffat core
  (:mod:`crlib.simulate.psf`);
* ``cte``: charge-transfer trails along the parallel read-out direction, growing with the date and
  shrinking with the sky level, as they remain after the pipeline's pixel-based correction
  (:mod:`crlib.simulate.cte`);
* ``dated_defects``: hot and warm pixels whose number grows with the date, including new ones not
  yet in the dark reference file (no DQ flag), and sink pixels (DQ 1024) (:mod:`crlib.simulate.defects`);
* ``prior_drizzle_dq``: DQ 4096 where the archive's own AstroDrizzle run flagged CRs;
* ``satellite_probability``: chance that an exposure holds a satellite trail
  (:mod:`crlib.simulate.satellites`);
* ``rotation_scale_errors``: per-exposure roll and plate-scale errors of the true pointing on top of
  the translations;
* ``cr_rate_sigma``: log-normal scatter of the CR rate from exposure to exposure;
* ``filters_per_visit``: visits whose exposures use several filters (blocks of exposures per filter);
* ``crowded_resolved_galaxies``: resolved galaxies as crowded, structured disks (spiral arms, dust
  lanes, star-forming knots with HII regions, crowded resolved stars at all magnitudes)
  (:func:`crlib.simulate.scene.crowd_resolved_galaxy`);
* ``surface_brightness_fluctuations``: the crowded disks' unresolved starlight as a grainy, static
  texture on the sky instead of smooth light (:mod:`crlib.simulate.fluctuations`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from crlib.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SimEffects:
    """Effects added to simulated exposures (all off: the basic simulator).

    Attributes
    ----------
    real_psf
        Render stars with drizzlepac's per-filter ACS/WFC PSF images instead of a Moffat profile.
    cte
        Add CTE trails (the residual after the pipeline's pixel-based correction).
    dated_defects
        Hot/warm pixel population growing with the observation date, some unflagged, and sink pixels.
    prior_drizzle_dq
        Set DQ 4096 where the archive's earlier AstroDrizzle run would have flagged CRs.
    satellite_probability
        Probability that an exposure holds one satellite trail (0: never).
    satellite_exposures
        Exposure indices (0-based) that always get a trail (benchmarks, tests).
    rotation_scale_errors
        Add per-exposure roll and scale errors to the true pointing.
    cr_rate_sigma
        Log-normal sigma of the per-exposure CR-rate factor (0: the profile's constant rate).
    filters_per_visit
        Filters used within one visit (1: single-filter visits); exposures are split into blocks.
    crowded_resolved_galaxies
        Draw resolved-galaxy scenes crowded and structured (arms, dust lanes, star-forming knots,
        crowded resolved stars; :func:`crlib.simulate.scene.crowd_resolved_galaxy`) instead of a
        smooth disk with sparse stars. Other field types are unaffected.
    surface_brightness_fluctuations
        Give a crowded resolved galaxy's unresolved starlight its pixel-to-pixel fluctuations
        (:mod:`crlib.simulate.fluctuations`; needs ``crowded_resolved_galaxies``).
    subarray_probability
        Chance that a visit is a one-chip ACS/WFC subarray visit (:mod:`crlib.simulate.subarray`).
    subarray_aperture
        Make every visit a subarray visit with this aperture (e.g. ``"WFC1A-512"``; tests, benchmarks).
    """

    real_psf: bool = False
    cte: bool = False
    dated_defects: bool = False
    prior_drizzle_dq: bool = False
    satellite_probability: float = 0.0
    satellite_exposures: tuple[int, ...] = ()
    rotation_scale_errors: bool = False
    cr_rate_sigma: float = 0.0
    filters_per_visit: int = 1
    crowded_resolved_galaxies: bool = False
    surface_brightness_fluctuations: bool = False
    subarray_probability: float = 0.0
    subarray_aperture: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.satellite_probability <= 1.0:
            raise ConfigError(f"satellite probability must be in [0, 1] (got {self.satellite_probability})")
        if self.cr_rate_sigma < 0:
            raise ConfigError(f"CR-rate sigma must be >= 0 (got {self.cr_rate_sigma})")
        if not 0.0 <= self.subarray_probability <= 1.0:
            raise ConfigError(f"subarray probability must be in [0, 1] (got {self.subarray_probability})")
        if self.subarray_aperture is not None:
            from crlib.simulate.subarray import ACS_WFC_APERTURES

            if self.subarray_aperture not in ACS_WFC_APERTURES:
                known = sorted(ACS_WFC_APERTURES)
                raise ConfigError(f"unknown subarray aperture {self.subarray_aperture!r}; known: {known}")
        if not 1 <= self.filters_per_visit <= 4:
            raise ConfigError(f"filters per visit must be 1-4 (got {self.filters_per_visit})")

    @classmethod
    def basic(cls) -> SimEffects:
        """The original simulator: no archive effect."""
        return cls()

    @classmethod
    def realistic(cls, **overrides: Any) -> SimEffects:
        """Every effect on with the documented values; ``overrides`` replace single fields.

        ``filters_per_visit`` stays 1 unless overridden: a visit of 3 exposures in two filters has
        a filter with a single exposure, where driz_cr has nothing to compare against.
        """
        preset = cls(
            real_psf=True,
            cte=True,
            dated_defects=True,
            prior_drizzle_dq=True,
            satellite_probability=0.05,
            rotation_scale_errors=True,
            cr_rate_sigma=0.25,
            crowded_resolved_galaxies=True,
            surface_brightness_fluctuations=True,
            subarray_probability=0.05,
        )
        return dataclasses.replace(preset, **overrides)

    @property
    def any(self) -> bool:
        """Whether any effect is on."""
        return self != SimEffects()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready switches (for ``visit.json``)."""
        data = dataclasses.asdict(self)
        data["satellite_exposures"] = list(self.satellite_exposures)
        return data


def parse_effects(preset: str) -> SimEffects:
    """``"basic"`` or ``"realistic"`` (the CLI's ``--effects``)."""
    if preset == "basic":
        return SimEffects.basic()
    if preset == "realistic":
        return SimEffects.realistic()
    raise ConfigError(f"effects must be 'basic' or 'realistic' (got {preset!r})")
