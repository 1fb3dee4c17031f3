"""ACS/WFC subarray apertures: one-chip exposures written the way the archive serves them.

A real ACS/WFC subarray FLC holds a single chip: ``SCI,1``/``ERR,1``/``DQ,1`` with ``CCDCHIP = 1``
(WFC1, which is ``SCI,2`` in a full-frame file), primary ``SUBARRAY = T`` and ``APERTURE`` naming
the aperture; ``LTV1``/``LTV2`` give the offset in the full chip. The supported post-2009
apertures read out through amplifier A, in the corner of WFC1 farthest from the inter-chip gap
(ACS Instrument Handbook, "Subarrays"): ``WFC1A-2K`` (2048 x 2046 pixels), ``WFC1A-1K``
(1024 x 1024) and ``WFC1A-512`` (512 x 512).

The simulator renders such a visit on the full-frame chip's window (so the real distortion,
CTE direction and detector defects of WFC1 apply) and renumbers the chip to ``EXTVER 1`` only when
it writes the files (:func:`crlib.simulate.flcfile.build_flc`). Its simulator truth
(``_simtruth.fits``) uses the file's numbering too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crlib.errors import ConfigError
from crlib.profiles import InstrumentProfile
from crlib.simulate.geometry import ChipWindow


@dataclass(frozen=True, slots=True)
class Aperture:
    """A subarray aperture: which CCD and which part of it (0-based full-chip pixels)."""

    name: str
    ccdchip: int
    nx: int
    ny: int
    x0: int
    y0: int


#: ACS/WFC amplifier-A subarrays. WFC1's readout corner is x = 0, y = 2047 in the full-frame file;
#: the first and last light-sensitive rows are unavailable to subarrays, so they end at row 2046.
ACS_WFC_APERTURES: dict[str, Aperture] = {
    "WFC1A-2K": Aperture("WFC1A-2K", ccdchip=1, nx=2048, ny=2046, x0=0, y0=1),
    "WFC1A-1K": Aperture("WFC1A-1K", ccdchip=1, nx=1024, ny=1024, x0=0, y0=1023),
    "WFC1A-512": Aperture("WFC1A-512", ccdchip=1, nx=512, ny=512, x0=0, y0=1535),
}

#: The aperture drawn for ``size="small"`` visits (the others are larger than a small crop).
SMALL_APERTURE = "WFC1A-512"


def aperture_window(profile: InstrumentProfile, name: str) -> ChipWindow:
    """The full-frame chip window an aperture covers (``sci_extver`` in full-frame numbering).

    Raises
    ------
    ConfigError
        For an aperture the profile does not have.
    """
    if profile.name != "acs_wfc" or name not in ACS_WFC_APERTURES:
        raise ConfigError(
            f"unknown subarray aperture {name!r} for {profile.name}; known: {sorted(ACS_WFC_APERTURES)}"
        )
    aperture = ACS_WFC_APERTURES[name]
    chip = next(c for c in profile.chips if c.ccdchip == aperture.ccdchip)
    return ChipWindow(chip.sci_extver, aperture.x0, aperture.y0, aperture.nx, aperture.ny)


def draw_aperture(
    *, probability: float, forced: str | None, size: str, seed: int, visit_index: int
) -> str | None:
    """The visit's subarray aperture, or ``None`` for the ordinary two-chip layout.

    Drawn from its own stream ``default_rng([seed, visit_index, 0, 9])``, so turning subarrays on
    or off leaves every other draw of the visit unchanged.

    Parameters
    ----------
    probability
        Chance that a visit is a subarray visit.
    forced
        Always this aperture (tests, benchmarks); overrides ``probability``.
    size
        ``"small"`` visits use :data:`SMALL_APERTURE`; ``"full"`` ones draw among all apertures.
    seed, visit_index
        The archive's seed and the visit's index.
    """
    if forced is not None:
        return forced
    if probability <= 0.0:
        return None
    rng = np.random.default_rng([seed, visit_index, 0, 9])
    if rng.random() >= probability:
        return None
    if size != "full":
        return SMALL_APERTURE
    return str(rng.choice(sorted(ACS_WFC_APERTURES)))
