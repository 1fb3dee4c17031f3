"""Dated detector defects: hot and warm pixels that accumulate with time, and sink pixels.

The basic simulator's defect pattern (:func:`crlib.simulate.detector.chip_defects`) is fixed. Here
the population depends on the observation date (sources in ``docs/simulator.md``):

* radiation damage creates ~1200 new hot pixels a day on WFC (ACS ISR 2002-06); monthly anneals
  heal part of them, so a persistent population grows with time. We use a flagged population of
  ``HOT_FRACTION_AT_INSTALL + HOT_FRACTION_PER_YEAR * years`` of the pixels, dark rate
  ``0.04 + Exp(0.1)`` e-/s, flagged DQ 16 above 0.14 e-/s ("hot") and DQ 64 below ("warm");
* pixels that turned hot since the last anneal are not in the dark reference file yet (the
  superdark trails the science data by weeks: ACS data handbook §4.3), so they carry no DQ flag:
  ~1200 per day over both chips (7.1e-5 of the pixels per day) times the days since the last
  anneal (uniform in a 30-day cycle, drawn per visit);
* sink pixels (DQ 1024) hold back charge: ~2.2 new ones per chip per day (ACS ISR 2024-01, 0.25 %
  of the frame by the end of 2021); each reads ``SINK_DEPTH_E`` below its expected value and so
  do 0-2 pixels trailing it, which the reference file also flags.

Positions come from a generator seeded by the detector seed and the day of the anneal cycle, so
every exposure of a visit sees the same defects at the same detector pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crlib.profiles import InstrumentProfile
from crlib.simulate.cte import years_since_install
from crlib.simulate.detector import DETECTOR_SEED
from crlib.simulate.geometry import ChipWindow

DQ_WARM_PIXEL = 64
DQ_SINK_PIXEL = 1024
HOT_FRACTION_AT_INSTALL = 0.001
HOT_FRACTION_PER_YEAR = 0.0005
HOT_THRESHOLD_E_PER_S = 0.14
NEW_HOT_FRACTION_PER_DAY = 1200.0 / (2 * 4096 * 2048)
ANNEAL_CYCLE_DAYS = 30.0
SINK_PER_CHIP_PER_DAY = 2.2
SINK_DEPTH_E = (20.0, 120.0)


@dataclass(frozen=True, slots=True)
class DatedDefects:
    """Hot/warm/sink pixels of one chip window at one date (window coordinates).

    Attributes
    ----------
    hot_y, hot_x, hot_rate, hot_flag
        Hot and warm pixels: position, dark rate (e-/s) and DQ flag (16, 64, or 0 = unflagged).
    sink_y, sink_x, sink_depth
        Sink pixels and the pixels trailing them: position and charge held back (e-).
    sink_flag
        DQ flag of each sink entry (1024).
    """

    hot_y: np.ndarray
    hot_x: np.ndarray
    hot_rate: np.ndarray
    hot_flag: np.ndarray
    sink_y: np.ndarray
    sink_x: np.ndarray
    sink_depth: np.ndarray

    @property
    def unflagged(self) -> np.ndarray:
        """bool per hot pixel: not in the reference file (no DQ flag)."""
        return self.hot_flag == 0


def _inside(window: ChipWindow, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (x >= window.x0) & (x < window.x0 + window.nx) & (y >= window.y0) & (y < window.y0 + window.ny)


def dated_defects(
    profile: InstrumentProfile, window: ChipWindow, *, mjd: float, days_since_anneal: float
) -> DatedDefects:
    """Hot/warm (flagged and new unflagged) and sink pixels of ``window`` at date ``mjd``.

    Parameters
    ----------
    profile
        Instrument (full chip shape).
    window
        The part of the chip being simulated.
    mjd
        Observation date.
    days_since_anneal
        Days since the last anneal (new hot pixels since then are unflagged).
    """
    full_ny, full_nx = profile.chip_shape
    n_pixels = full_ny * full_nx
    years = years_since_install(mjd)
    # the persistent population is a property of the detector up to this date: seed by the year
    rng = np.random.default_rng([DETECTOR_SEED, window.sci_extver, 7, int(years * 12)])
    n_flagged = int((HOT_FRACTION_AT_INSTALL + HOT_FRACTION_PER_YEAR * years) * n_pixels)
    n_new = int(NEW_HOT_FRACTION_PER_DAY * max(days_since_anneal, 0.0) * n_pixels)
    n_sink = int(SINK_PER_CHIP_PER_DAY * years * 365.25)
    y = rng.integers(0, full_ny, n_flagged + n_new)
    x = rng.integers(0, full_nx, n_flagged + n_new)
    rate = 0.04 + rng.exponential(0.1, n_flagged + n_new)
    flag = np.where(rate >= HOT_THRESHOLD_E_PER_S, 16, DQ_WARM_PIXEL).astype(np.int16)
    flag[n_flagged:] = 0
    sy = rng.integers(0, full_ny, n_sink)
    sx = rng.integers(0, full_nx, n_sink)
    depth = rng.uniform(*SINK_DEPTH_E, n_sink)
    trail = rng.integers(0, 3, n_sink)
    # sink trails point away from the serial register like CTE trails (toward the chip gap)
    step = 1 if window.sci_extver == 1 else -1
    tys = [sy]
    txs = [sx]
    tdepth = [depth]
    for k in (1, 2):
        pick = trail >= k
        tys.append(sy[pick] + step * k)
        txs.append(sx[pick])
        tdepth.append(depth[pick] * 0.5**k)
    sink_y, sink_x, sink_depth = np.concatenate(tys), np.concatenate(txs), np.concatenate(tdepth)
    keep_hot = _inside(window, y, x)
    keep_sink = _inside(window, sink_y, sink_x)
    return DatedDefects(
        hot_y=y[keep_hot] - window.y0,
        hot_x=x[keep_hot] - window.x0,
        hot_rate=rate[keep_hot],
        hot_flag=flag[keep_hot],
        sink_y=sink_y[keep_sink] - window.y0,
        sink_x=sink_x[keep_sink] - window.x0,
        sink_depth=sink_depth[keep_sink],
    )


def add_hot_charge(
    rng: np.random.Generator, charge: np.ndarray, defects: DatedDefects, *, exptime_s: float
) -> None:
    """Add the hot/warm pixels' dark charge (Poisson) to ``charge`` in place, electrons."""
    np.add.at(charge, (defects.hot_y, defects.hot_x), rng.poisson(defects.hot_rate * exptime_s))


def apply_sinks(charge: np.ndarray, defects: DatedDefects) -> None:
    """Hold back the sink pixels' charge (never below zero), in place."""
    values = charge[defects.sink_y, defects.sink_x]
    charge[defects.sink_y, defects.sink_x] = np.maximum(values - defects.sink_depth, 0.0)


def defect_dq(shape: tuple[int, int], defects: DatedDefects) -> np.ndarray:
    """int16 DQ bits of the dated defects: 16/64 for flagged hot/warm pixels, 1024 for sinks."""
    dq = np.zeros(shape, dtype=np.int16)
    np.bitwise_or.at(dq, (defects.hot_y, defects.hot_x), defects.hot_flag)
    dq[defects.sink_y, defects.sink_x] |= DQ_SINK_PIXEL
    return dq
