"""Satellite trails: straight streaks of reflected sunlight across one exposure.

A satellite crosses the 202" ACS/WFC field in about a second, so its trail is a straight line
across the whole field (both chips), present in one exposure only. ACS ISR 2022-08 finds trails in
a few per cent of ACS/WFC exposures, a rate that doubled between 2002 and 2022, with no trend in
brightness. We draw the line on the visit's sky frame, so it continues straight from chip to chip,
with a Gaussian cross-section of FWHM 3-8 px (the satellite is far out of focus) and a peak of
20-1000 e- per pixel (log-uniform): from barely visible to bright.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crlib.simulate.geometry import FloatArray

FWHM_RANGE_PX = (3.0, 8.0)
PEAK_RANGE_E = (20.0, 1000.0)


@dataclass(frozen=True, slots=True)
class SatelliteTrail:
    """One trail on the visit frame.

    Attributes
    ----------
    angle_rad
        Direction of the trail on the visit frame (u, v), radians.
    offset_px
        Signed distance of the line from the frame point ``centre``, pixels.
    centre
        ``(u, v)`` the offset refers to (the middle of the field).
    fwhm_px
        Full width at half maximum across the trail, pixels.
    peak_e
        Charge on the trail's centre line, electrons per pixel.
    """

    angle_rad: float
    offset_px: float
    centre: tuple[float, float]
    fwhm_px: float
    peak_e: float

    def as_dict(self) -> dict[str, float | list[float]]:
        """JSON-ready description."""
        return {
            "angle_deg": math.degrees(self.angle_rad),
            "offset_px": self.offset_px,
            "centre_uv": list(self.centre),
            "fwhm_px": self.fwhm_px,
            "peak_e": self.peak_e,
        }


def draw_trail(rng: np.random.Generator, centre: tuple[float, float], half_size_px: float) -> SatelliteTrail:
    """A random trail through the field around ``centre`` (within ``half_size_px`` of it)."""
    low, high = PEAK_RANGE_E
    return SatelliteTrail(
        angle_rad=float(rng.uniform(0.0, math.pi)),
        offset_px=float(rng.uniform(-0.8, 0.8) * half_size_px),
        centre=centre,
        fwhm_px=float(rng.uniform(*FWHM_RANGE_PX)),
        peak_e=float(math.exp(rng.uniform(math.log(low), math.log(high)))),
    )


def trail_image(trail: SatelliteTrail, u: FloatArray, v: FloatArray) -> FloatArray:
    """Charge of the trail (electrons) at visit-frame coordinates ``u, v`` (any shape)."""
    normal = (-math.sin(trail.angle_rad), math.cos(trail.angle_rad))
    distance = (u - trail.centre[0]) * normal[0] + (v - trail.centre[1]) * normal[1] - trail.offset_px
    sigma = trail.fwhm_px / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    result: FloatArray = trail.peak_e * np.exp(-0.5 * (distance / sigma) ** 2)
    return result
