"""CCD read-out of a chip window: Poisson + read noise, per-amplifier gain, defects, saturation.

The signal chain mirrors a calibrated ACS/WFC FLC: expected electrons (scene + sky + dark) are
Poisson-drawn, cosmic-ray charge and hot-pixel charge added, charge above the full well bleeds
along the column (flagged DQ 256), read noise (``READNSE<amp>``, e-) added, the result digitised
with the amplifier gain (``ATODGN<amp>``, e-/DN) and converted back to electrons, and the mean
dark (``MEANDARK``) subtracted. Hot pixels (DQ 16) and bad columns (DQ 4) are a fixed detector
pattern (same positions in every exposure), with residual signal in SCI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.simulate.cte import apply_cte
from crlib.simulate.geometry import ChipWindow, FloatArray

if TYPE_CHECKING:
    from crlib.simulate.defects import DatedDefects

FULL_WELL_E = 80000.0
DARK_RATE_E_PER_S = 0.006
HOT_PIXEL_FRACTION = 0.003
BAD_COLUMNS_PER_CHIP = 6
DETECTOR_SEED = 20020307  # ACS installation date: the defect pattern is a property of the detector

DQ_BAD_DETECTOR_PIXEL = 4
DQ_HOT_PIXEL = 16
DQ_SATURATED = 256


@dataclass(frozen=True, slots=True)
class Defects:
    """Fixed defect pattern of one chip window.

    Attributes
    ----------
    hot_y, hot_x
        Hot pixel positions in the window.
    hot_rate
        Residual (not dark-subtracted) signal of each hot pixel, e-/s.
    column_mask
        bool (ny, nx), pixels of bad column segments.
    column_offset
        float (ny, nx), residual signal of bad columns, e- (0 elsewhere).
    """

    hot_y: np.ndarray
    hot_x: np.ndarray
    hot_rate: np.ndarray
    column_mask: np.ndarray
    column_offset: FloatArray


def chip_defects(profile: InstrumentProfile, window: ChipWindow) -> Defects:
    """The detector's hot pixels and bad columns that fall inside ``window``."""
    full_ny, full_nx = profile.chip_shape
    rng = np.random.default_rng([DETECTOR_SEED, window.sci_extver])
    n_hot = int(HOT_PIXEL_FRACTION * full_ny * full_nx)
    hot_y = rng.integers(0, full_ny, n_hot)
    hot_x = rng.integers(0, full_nx, n_hot)
    hot_rate = rng.exponential(0.08, n_hot) + 0.02
    col_x = rng.integers(0, full_nx, BAD_COLUMNS_PER_CHIP)
    col_start = rng.integers(0, full_ny // 2, BAD_COLUMNS_PER_CHIP)
    col_length = rng.integers(200, full_ny, BAD_COLUMNS_PER_CHIP)
    col_level = rng.uniform(-40.0, 300.0, BAD_COLUMNS_PER_CHIP)

    inside = (
        (hot_x >= window.x0)
        & (hot_x < window.x0 + window.nx)
        & (hot_y >= window.y0)
        & (hot_y < window.y0 + window.ny)
    )
    column_mask = np.zeros(window.shape, dtype=bool)
    column_offset = np.zeros(window.shape)
    for x, start, length, level in zip(col_x, col_start, col_length, col_level, strict=True):
        local_x = x - window.x0
        if not 0 <= local_x < window.nx:
            continue
        lo = max(start - window.y0, 0)
        hi = min(start + length - window.y0, window.ny)
        if hi > lo:
            column_mask[lo:hi, local_x] = True
            column_offset[lo:hi, local_x] = level
    return Defects(
        hot_y=hot_y[inside] - window.y0,
        hot_x=hot_x[inside] - window.x0,
        hot_rate=hot_rate[inside],
        column_mask=column_mask,
        column_offset=column_offset,
    )


def amplifier_columns(profile: InstrumentProfile, window: ChipWindow) -> np.ndarray:
    """Amplifier index (0 = left amp, 1 = right amp of the chip) of each window column, shape (nx,)."""
    full_nx = profile.chip_shape[1]
    return (np.arange(window.x0, window.x0 + window.nx) >= full_nx // 2).astype(np.int64)


def bleed_saturation(charge: FloatArray, full_well: float) -> np.ndarray:
    """Spill charge above ``full_well`` up and down the column, in place.

    Returns
    -------
    numpy.ndarray
        bool mask of pixels at full well (saturated cores and their bleed trails).
    """
    ny = charge.shape[0]
    over_columns = np.flatnonzero((charge > full_well).any(axis=0))
    for col in over_columns:
        column = charge[:, col]
        over = column > full_well
        edges = np.diff(np.concatenate(([0], over.view(np.int8), [0])))
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            excess = float(np.sum(column[start:stop] - full_well))
            column[start:stop] = full_well
            for direction in (-1, 1):
                remaining = excess / 2.0
                row = start - 1 if direction < 0 else stop
                while remaining > 0 and 0 <= row < ny:
                    room = max(full_well - column[row], 0.0)
                    take = min(room, remaining)
                    column[row] += take
                    remaining -= take
                    row += direction
    return charge >= full_well


@dataclass(frozen=True, slots=True)
class CteSetup:
    """CTE trailing of one chip window (see :func:`crlib.simulate.cte.apply_cte`).

    Attributes
    ----------
    transfers
        Parallel transfers of each window row to the serial register, shape (ny,).
    trail_sign
        +1: trails toward larger rows; -1: toward smaller rows.
    years
        Years since ACS installation.
    """

    transfers: np.ndarray
    trail_sign: int
    years: float

    def trail(self, charge: FloatArray, *, background_e: float) -> FloatArray:
        """The charge after CTE trailing along the window's columns (``charge`` is not modified).

        Parameters
        ----------
        charge
            Electrons per pixel before read-out, shape (ny, nx).
        background_e
            Sky + dark per pixel, electrons (fills CTE traps).

        Returns
        -------
        numpy.ndarray
            Trailed charge, shape (ny, nx).
        """
        trailed, _ = apply_cte(
            charge,
            transfers=self.transfers,
            trail_sign=self.trail_sign,
            background_e=background_e,
            years=self.years,
        )
        return trailed


@dataclass(frozen=True, slots=True)
class Readout:
    """Calibrated arrays of one chip window and what the effects did.

    Attributes
    ----------
    sci, err
        float32 (ny, nx), electrons.
    dq
        int16 (ny, nx).
    cr_charge
        float32 (ny, nx): CR charge as read out (after CTE, including its own trail), electrons.
    cte_trail
        float32 (ny, nx): net charge CTE moved into each pixel from everything but CRs (positive
        in trails, negative where sources lost charge), electrons (zeros without CTE).
    """

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    cr_charge: np.ndarray
    cte_trail: np.ndarray


def read_out_detailed(
    rng: np.random.Generator,
    expected_e: FloatArray,
    *,
    cr_charge: FloatArray,
    defects: Defects,
    amp_index: np.ndarray,
    gains: tuple[float, float],
    read_noises: tuple[float, float],
    exptime_s: float,
    dark_e: float,
    dated: DatedDefects | None = None,
    cte: CteSetup | None = None,
    background_e: float = 0.0,
) -> Readout:
    """Turn expected electrons into calibrated SCI/ERR/DQ arrays, with the optional archive effects.

    Parameters
    ----------
    rng
        Random generator (the exposure/chip's noise stream).
    expected_e
        Noiseless scene + sky, electrons, shape (ny, nx).
    cr_charge
        Cosmic-ray charge, electrons, shape (ny, nx).
    defects
        Hot pixels and bad columns of this window.
    amp_index
        Amplifier (0/1) of each column, shape (nx,).
    gains, read_noises
        Per amplifier (left, right): e-/DN and e- rms.
    exptime_s
        Exposure time, seconds (hot pixel charge accrues over it).
    dark_e
        Mean dark charge per pixel (subtracted, like ``MEANDARK``), electrons.
    dated
        Dated hot/warm/sink pixels (:mod:`crlib.simulate.defects`); they replace the basic hot
        pixels of ``defects`` (its bad columns stay).
    cte
        Trail the charge along the columns before the read noise is added.
    background_e
        Sky + dark per pixel, electrons (fills CTE traps).

    Returns
    -------
    Readout
        ``sci`` float32, ``err`` float32, ``dq`` int16, ``cr_charge`` and ``cte_trail``, each (ny, nx).
    """
    from crlib.simulate.defects import add_hot_charge, apply_sinks, defect_dq

    charge = rng.poisson(np.clip(expected_e, 0.0, None) + dark_e).astype(np.float64)
    charge += cr_charge
    if dated is None:
        charge[defects.hot_y, defects.hot_x] += rng.poisson(defects.hot_rate * exptime_s)
    else:
        add_hot_charge(rng, charge, dated, exptime_s=exptime_s)
        apply_sinks(charge, dated)
    charge += np.where(defects.column_mask, defects.column_offset, 0.0)
    saturated = bleed_saturation(charge, FULL_WELL_E)
    cr_read = np.asarray(cr_charge, dtype=np.float64)
    trail = np.zeros_like(charge)
    if cte is not None:
        static = charge - cr_read
        trailed = cte.trail(charge, background_e=background_e)
        trailed_static = cte.trail(static, background_e=background_e)
        trail = trailed_static - static  # net: trails show where more charge arrives than leaves
        cr_read = trailed - trailed_static
        charge = trailed
    gain = np.asarray(gains)[amp_index][None, :]
    noise = np.asarray(read_noises)[amp_index][None, :]
    charge += rng.standard_normal(charge.shape) * noise
    sci = np.rint(charge / gain) * gain - dark_e
    err = np.sqrt(np.clip(sci + dark_e, 0.0, None) + noise**2)
    dq = np.zeros(charge.shape, dtype=np.int16)
    dq[defects.column_mask] |= DQ_BAD_DETECTOR_PIXEL
    if dated is None:
        dq[defects.hot_y, defects.hot_x] |= DQ_HOT_PIXEL
    else:
        dq |= defect_dq(charge.shape, dated)
    dq[saturated] |= DQ_SATURATED
    return Readout(
        sci=sci.astype(np.float32),
        err=err.astype(np.float32),
        dq=dq,
        cr_charge=cr_read.astype(np.float32),
        cte_trail=trail.astype(np.float32),
    )
