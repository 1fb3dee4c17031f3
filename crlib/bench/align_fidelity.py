"""True alignment error of a visit's fitted WCS against the pointing the simulator injected.

The simulator (:mod:`crlib.simulate.visit`) writes each exposure's header WCS from its *header*
pointing and renders the stars through its *true* pointing: the header pointing moved by
``pointing_error_px`` (a translation at the anchor pixel) and, with
``SimEffects.rotation_scale_errors``, turned by ``effects.roll_error_deg`` and scaled by
``effects.scale_error`` about the anchor. ``truth/visit.json`` records all of it (``pointing``,
``anchor``, per exposure ``dither_px``, ``pointing_error_px``, ``effects``), so both pointings are
rebuilt here exactly, with the simulator's own template WCS (SIP, D2IM and NPOL distortion).

The error of a WCS is then measured on a grid of pixels of every chip: the star the WCS maps to sky
position ``s`` is truly at ``true_wcs^-1(s)``; the error is that pixel minus the grid pixel. For a
relative fit the right answer is the reference exposure's frame (whose own header error stays), so
``s`` is first carried from the reference's header frame to the true sky (``true_ref`` after
``header_ref^-1``). A translation-only comparison (``pointing_error_px`` alone) would count the
injected roll and scale, which the fit is meant to correct, as error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SimulatedPointing", "alignment_errors", "simulated_pointings", "wcs_error_px"]


@dataclass(frozen=True)
class SimulatedPointing:
    """One simulated exposure's two pointings and the chip windows its file holds.

    Attributes
    ----------
    header, true
        :class:`crlib.simulate.pointing.Pointing` of the header WCS and of the rendered stars.
    windows
        ``{sci_extver: (x0, y0, nx, ny)}``: the file's chip window inside the full chip
        (``sci_extver`` numbered as in a full-frame file).
    file_extvers
        ``{sci_extver: EXTVER in the file}``: equal but for a subarray, whose one chip is ``SCI,1``.
    injected
        What was injected: ``shift_px`` (at the anchor), ``roll_deg``, ``scale``.
    """

    header: Any
    true: Any
    windows: dict[int, tuple[int, int, int, int]]
    injected: dict[str, Any]
    file_extvers: dict[int, int] = field(default_factory=dict)

    def file_extver(self, sci_extver: int) -> int:
        """The EXTVER of chip ``sci_extver`` in the exposure's file."""
        return self.file_extvers.get(sci_extver, sci_extver)


def simulated_pointings(visit_json: Mapping[str, Any]) -> dict[str, SimulatedPointing]:
    """Rebuild every exposure's header and true pointing from the simulator's ``visit.json``.

    Raises
    ------
    KeyError
        When ``visit_json`` lacks the pointing facts (not written by :mod:`crlib.simulate`).
    """
    from crlib.profiles import ACS_WFC
    from crlib.simulate.pointing import nominal_pointing
    from crlib.simulate.template import load_template

    template = load_template(ACS_WFC)
    anchor_info = visit_json["anchor"]
    anchor = (int(anchor_info["sci_extver"]), float(anchor_info["x"]), float(anchor_info["y"]))
    pointing = visit_json["pointing"]
    nominal = nominal_pointing(
        template,
        anchor,
        ra_deg=float(pointing["ra_deg"]),
        dec_deg=float(pointing["dec_deg"]),
        roll_deg=float(pointing["roll_deg"]),
    )
    windows = {
        int(w["sci_extver"]): (int(w["x0"]), int(w["y0"]), int(w["nx"]), int(w["ny"]))
        for w in visit_json["windows"]
    }
    file_extvers = {
        int(w["sci_extver"]): int(w.get("file_extver", w["sci_extver"])) for w in visit_json["windows"]
    }
    out: dict[str, SimulatedPointing] = {}
    for entry in visit_json["exposures"]:
        dither = tuple(float(v) for v in entry["dither_px"])
        error = tuple(float(v) for v in entry["pointing_error_px"])
        effects = entry.get("effects") or {}
        roll = float(effects.get("roll_error_deg", 0.0) or 0.0)
        scale = float(effects.get("scale_error", 1.0) or 1.0)
        header = nominal.moved_by_pixels((dither[0], dither[1]))
        true = header.moved_by_pixels((error[0], error[1]))
        if roll != 0.0 or scale != 1.0:
            true = true.rotated_and_scaled(roll, scale)
        out[str(entry["rootname"]).lower()] = SimulatedPointing(
            header, true, windows, {"shift_px": list(error), "roll_deg": roll, "scale": scale}, file_extvers
        )
    return out


def _grid(window: tuple[int, int, int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    _, _, nx, ny = window
    gx, gy = np.meshgrid(np.arange(0, nx, step, dtype=float), np.arange(0, ny, step, dtype=float))
    return gx.ravel(), gy.ravel()


def wcs_error_px(
    wcs: Any,
    exposure: SimulatedPointing,
    sci_extver: int,
    *,
    reference: SimulatedPointing | None = None,
    step: int = 64,
) -> np.ndarray:
    """Per-grid-pixel error (pixels, shape ``(n, 2)``) of one chip's WCS against the true pointing.

    Parameters
    ----------
    wcs
        The chip's WCS as written in the file (astropy or stwcs; pixel coordinates of the file's
        window, 0-based).
    exposure
        The exposure's pointings (:func:`simulated_pointings`).
    sci_extver
        The chip.
    reference
        For a relative fit, the reference exposure: the right WCS is then the true one carried into
        the reference's header frame. ``None``: the true sky (an absolute fit).
    step
        Grid spacing, pixels.
    """
    x0, y0, _, _ = window = exposure.windows[sci_extver]
    gx, gy = _grid(window, step)
    ra, dec = wcs.all_pix2world(gx, gy, 0)
    if reference is not None:
        # sky in the reference's header frame -> the reference's (full-chip) pixel -> true sky
        hx, hy = reference.header.chip_wcs(sci_extver).all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=50)
        ra, dec = reference.true.chip_wcs(sci_extver).all_pix2world(hx, hy, 0)
    tx, ty = exposure.true.chip_wcs(sci_extver).all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=50)
    return np.column_stack([tx - x0 - gx, ty - y0 - gy])


def _rms(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(errors**2, axis=1))))


def alignment_errors(
    visit_dir: Path,
    files: Mapping[str, Path],
    *,
    reference: str | None,
    step: int = 64,
) -> dict[str, dict[str, float]]:
    """True alignment error of each exposure's WCS, and of its header WCS, on every chip.

    Parameters
    ----------
    visit_dir
        The simulated visit (``truth/visit.json``).
    files
        ``{rootname: FLC path}`` whose WCS is judged (e.g. the aligned working copies).
    reference
        Rootname of the relative fit's reference exposure, or ``None`` for the true sky (absolute fit).
    step
        Grid spacing, pixels.

    Returns
    -------
    dict
        ``{rootname: {"rms_px", "max_px", "header_rms_px", "header_max_px", "header_check_px"}}``.
        ``header_*`` judge the exposure's own header WCS the same way (what an alignment that keeps
        the header gets); ``header_check_px`` is the largest difference between the file's original
        header WCS and the rebuilt header pointing (a consistency check, ~0).
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    visit_dir = Path(visit_dir)
    info = json.loads((visit_dir / "truth" / "visit.json").read_text())
    pointings = simulated_pointings(info)
    ref = pointings[reference] if reference is not None else None
    out: dict[str, dict[str, float]] = {}
    for rootname, path in files.items():
        exposure = pointings[rootname]
        fitted, header, check = [], [], []
        with fits.open(path, memmap=False) as hdul:
            for extver in exposure.windows:
                hdr = hdul["SCI", exposure.file_extver(extver)].header
                fitted.append(wcs_error_px(WCS(hdr, fobj=hdul), exposure, extver, reference=ref, step=step))
        original = visit_dir / Path(path).name
        with fits.open(original, memmap=False) as hdul:
            for extver, window in exposure.windows.items():
                wcs = WCS(hdul["SCI", exposure.file_extver(extver)].header, fobj=hdul)
                header.append(wcs_error_px(wcs, exposure, extver, reference=ref, step=step))
                gx, gy = _grid(window, step)
                ra, dec = wcs.all_pix2world(gx, gy, 0)
                rebuilt = exposure.header.chip_wcs(extver)
                hx, hy = rebuilt.all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=50)
                check.append(np.hypot(hx - window[0] - gx, hy - window[1] - gy))
        fit_all, header_all = np.concatenate(fitted), np.concatenate(header)
        out[rootname] = {
            "rms_px": _rms(fit_all),
            "max_px": float(np.max(np.hypot(*fit_all.T))),
            "header_rms_px": _rms(header_all),
            "header_max_px": float(np.max(np.hypot(*header_all.T))),
            "header_check_px": float(np.max(np.concatenate(check))),
        }
    return out
