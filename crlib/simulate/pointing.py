"""Telescope pointings as rigid sky rotations of the template's two-chip WCS.

A :class:`Pointing` is the template WCS of every chip after a sky rotation. Visits use three
kinds: the nominal pointing (target + roll), each exposure's *header* pointing (nominal moved by
its dither) and each exposure's *true* pointing (header moved by the injected pointing error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from crlib.simulate.geometry import (
    FloatArray,
    orientat_deg,
    radec,
    rotate_chip_wcs,
    rotation_about,
    rotation_between,
    unit_vector,
)
from crlib.simulate.template import Template


@dataclass(frozen=True)
class Pointing:
    """Per-chip tangent points and CD matrices of one pointing.

    Attributes
    ----------
    template
        The template the rotation applies to.
    rotation
        Sky rotation (3, 3) from the template's pointing to this one.
    anchor
        ``(sci_extver, x, y)``: the full-chip pixel (0-based) that dither and error offsets refer to.
    scale
        Plate-scale factor about the anchor (1: the template's scale; > 1: the sky looks smaller).
    """

    template: Template
    rotation: FloatArray
    anchor: tuple[int, float, float]
    scale: float = 1.0

    def chip_crval_cd(self, sci_extver: int) -> tuple[tuple[float, float], FloatArray]:
        """Rotated (and scaled about the anchor) ``(CRVAL1, CRVAL2)`` and CD matrix of one chip."""
        crval, cd = self.template.crval_cd(sci_extver)
        crval, cd = rotate_chip_wcs(crval, cd, self.rotation)
        if self.scale == 1.0:
            return crval, cd
        anchor = Pointing(self.template, self.rotation, self.anchor).anchor_sky()
        point = unit_vector(crval[0], crval[1])
        axis = np.cross(anchor, point)
        norm = float(np.linalg.norm(axis))
        if norm > 0:
            angle = math.atan2(norm, float(np.dot(anchor, point)))
            point = rotation_about(axis / norm, (self.scale - 1.0) * angle) @ point
        return radec(point), cd * self.scale

    def rotated_and_scaled(self, angle_deg: float, scale: float) -> Pointing:
        """This pointing turned by ``angle_deg`` about the anchor's sky position and scaled by ``scale``.

        Positive angles turn the sky counter-clockwise on the detector, as ``roll_deg`` of
        :func:`nominal_pointing`; ``scale`` multiplies the plate scale (an aberration-like error).
        """
        turn = rotation_about(self.anchor_sky(), math.radians(angle_deg))
        return Pointing(self.template, turn @ self.rotation, self.anchor, self.scale * scale)

    def chip_wcs(self, sci_extver: int) -> WCS:
        """Full-chip WCS with distortion for one chip."""
        crval, cd = self.chip_crval_cd(sci_extver)
        return self.template.chip_wcs(sci_extver, crval, cd)

    def anchor_sky(self, offset_px: tuple[float, float] = (0.0, 0.0)) -> FloatArray:
        """Unit vector of the sky position at ``anchor + offset_px``."""
        extver, x, y = self.anchor
        ra, dec = self.chip_wcs(extver).all_pix2world([[x + offset_px[0], y + offset_px[1]]], 0)[0]
        return unit_vector(float(ra), float(dec))

    def moved_by_pixels(self, shift_px: tuple[float, float]) -> Pointing:
        """The pointing that makes every star appear ``shift_px`` further along detector (x, y).

        Evaluated at the anchor: the star imaged at ``anchor`` here is imaged at
        ``anchor + shift_px`` in the returned pointing.
        """
        step = rotation_between(self.anchor_sky((-shift_px[0], -shift_px[1])), self.anchor_sky())
        # ``step`` maps the point now at anchor-shift onto the anchor's sky position; the telescope
        # must move the opposite way so that the old anchor sky point lands at anchor+shift.
        return Pointing(self.template, step.T @ self.rotation, self.anchor, self.scale)

    def position_angle_change_deg(self) -> float:
        """Change of the anchor chip's ``ORIENTAT`` relative to the template, degrees."""
        extver = self.anchor[0]
        _, cd_new = self.chip_crval_cd(extver)
        _, cd_old = self.template.crval_cd(extver)
        return (orientat_deg(cd_new) - orientat_deg(cd_old) + 180.0) % 360.0 - 180.0


def nominal_pointing(
    template: Template,
    anchor: tuple[int, float, float],
    *,
    ra_deg: float,
    dec_deg: float,
    roll_deg: float,
) -> Pointing:
    """Pointing that puts the anchor pixel on ``(ra_deg, dec_deg)``, rolled by ``roll_deg``.

    Parameters
    ----------
    template
        Real template WCS.
    anchor
        ``(sci_extver, x, y)`` full-chip pixel to place on the target.
    ra_deg, dec_deg
        Target position, degrees.
    roll_deg
        Rotation of the focal plane about the target relative to the template's roll, degrees
        (positive: ``ORIENTAT`` decreases, the sky turns counter-clockwise on the detector).
    """
    identity = Pointing(template, np.eye(3), anchor)
    target = unit_vector(ra_deg, dec_deg)
    to_target = rotation_between(identity.anchor_sky(), target)
    roll = rotation_about(target, math.radians(roll_deg))
    return Pointing(template, roll @ to_target, anchor)
