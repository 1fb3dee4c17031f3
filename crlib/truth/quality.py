"""Quality gates for ground-truth CR masks: ``ok`` | ``suspect`` | ``failed``, always with reasons.

Gates (thresholds in :class:`QualityThresholds`):

* **alignment** -- driz_cr flags star cores as CRs when exposures are misaligned (~1 px: 15-55 % of
  core pixels); the visit's relative-fit RMS must be small, the estimated misalignment (fit error,
  or the measured offset of an exposure left on its header WCS) below
  ``alignment_error_suspect_px``, and a visit whose misalignment is unknown is suspect. Measured
  on a small simulated globular cluster (one of three exposures shifted on top of a perfect WCS):
  star-core pixels flagged 0.00 / 0.01 / 0.01 / 0.01 / 0.06 / 3.5 % at 0 / 0.2 / 0.3 / 0.5 /
  0.7 / 1.0 px, so the 0.25 px limit keeps a factor ~3 below the onset;
* **star-core contamination** -- the fraction of bright-source core pixels flagged as CR above the
  chance that real CRs hit them (the chip's CR pixel fraction), with star cores found in
  drizzlepac's CR-free blotted median image (multi-frame: the CR-cleaned median); judged only
  with >= ``min_star_core_pixels`` core pixels, since one real CR event in 250 core pixels is
  already 2 %;
* **CR rate** -- CR events per cm² per second over valid pixels against the profile's on-orbit rate
  (the rate-unit mistake gives ~36x too many CR pixels); and the CR pixel fraction itself;
* **valid fraction** -- too little of the chip covered by two exposures makes the mask meaningless.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from crlib.records import QualityStatus, TruthResult
from crlib.truth.dilation import dilate_rectangle

log = logging.getLogger(__name__)

_RANK: dict[str, int] = {"ok": 0, "suspect": 1, "failed": 2}


@dataclass(frozen=True, slots=True)
class QualityThresholds:
    """Limits of the quality gates (``*_suspect`` makes a mask suspect, ``*_failed`` failed).

    ``alignment_error_suspect_px`` was 0.05 px, the rms tweakwcs reaches on a rich field rather than
    what harms the mask: star-core contamination stays at <= 0.06 % up to 0.7 px (module docstring).
    """

    alignment_rms_suspect_px: float = 0.5
    alignment_rms_failed_px: float = 1.0
    alignment_error_suspect_px: float = 0.25
    star_core_suspect: float = 0.02
    star_core_failed: float = 0.10
    min_star_core_pixels: int = 1000
    cr_rate_ratio_low_suspect: float = 0.25
    cr_rate_ratio_high_suspect: float = 4.0
    cr_rate_ratio_low_failed: float = 0.02
    cr_rate_ratio_high_failed: float = 15.0
    min_expected_events: float = 20.0
    cr_fraction_failed: float = 0.2
    valid_fraction_suspect: float = 0.5
    valid_fraction_failed: float = 0.1


@dataclass(frozen=True, slots=True)
class ChipQuality:
    """Numbers the gates look at for one chip.

    Attributes
    ----------
    chip
        SCI extver.
    cr_pixels, cr_events
        CR pixels / connected CR events inside valid pixels.
    valid_pixels, total_pixels
        Valid pixel count and chip size.
    exptime_s
        Exposure time, seconds.
    pixel_area_cm2
        Physical pixel area, cm².
    star_core_pixels, star_core_flagged
        Bright-source core pixels (valid) and how many of them are flagged as CR.
    """

    chip: int
    cr_pixels: int
    cr_events: int
    valid_pixels: int
    total_pixels: int
    exptime_s: float
    pixel_area_cm2: float
    star_core_pixels: int
    star_core_flagged: int

    @property
    def valid_fraction(self) -> float:
        """Valid pixels / chip pixels."""
        return self.valid_pixels / self.total_pixels if self.total_pixels else 0.0

    @property
    def cr_fraction(self) -> float:
        """CR pixels / valid pixels."""
        return self.cr_pixels / self.valid_pixels if self.valid_pixels else 0.0

    @property
    def cr_rate_per_cm2_s(self) -> float:
        """Measured CR event rate, events cm⁻² s⁻¹."""
        area = self.valid_pixels * self.pixel_area_cm2
        return self.cr_events / (area * self.exptime_s) if area > 0 and self.exptime_s > 0 else 0.0

    @property
    def star_core_contamination(self) -> float | None:
        """Fraction of star-core pixels flagged as CR (``None`` without star cores)."""
        return self.star_core_flagged / self.star_core_pixels if self.star_core_pixels else None

    @property
    def star_core_excess(self) -> float | None:
        """Star-core contamination above chance: real CRs hit star cores as often as any pixel.

        ``(flagged - cr_fraction * core_pixels) / core_pixels``, ``None`` without star cores.
        """
        if not self.star_core_pixels:
            return None
        chance = self.cr_fraction * self.star_core_pixels
        return (self.star_core_flagged - chance) / self.star_core_pixels


def failed_truth(rootname: str, method: str, reason: str, **parameters: Any) -> TruthResult:
    """A ``failed`` :class:`~crlib.records.TruthResult` (no product) with its reason."""
    return TruthResult(rootname, method, "failed", None, (), (reason,), dict(parameters))  # type: ignore[arg-type]


def gate_parameters(chips: Iterable[ChipQuality]) -> dict[str, float | int | None]:
    """The gate numbers of each chip as flat record parameters (``chip<N>_cr_fraction`` ...)."""
    parameters: dict[str, float | int | None] = {}
    for chip in chips:
        parameters[f"chip{chip.chip}_cr_fraction"] = chip.cr_fraction
        parameters[f"chip{chip.chip}_cr_rate_per_cm2_s"] = chip.cr_rate_per_cm2_s
        parameters[f"chip{chip.chip}_star_core_contamination"] = chip.star_core_contamination
        parameters[f"chip{chip.chip}_star_core_pixels"] = chip.star_core_pixels
    return parameters


def count_events(mask: np.ndarray) -> int:
    """Connected components (8-connectivity) of a binary mask: one per CR event."""
    from scipy.ndimage import label

    _, n = label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    return int(n)


def local_maxima(image: np.ndarray, candidates: np.ndarray, *, size: int = 5) -> np.ndarray:
    """``candidates`` that equal the maximum of their ``size`` x ``size`` neighbourhood.

    The same as ``candidates & (image == scipy.ndimage.maximum_filter(image, size))`` (its
    ``reflect`` edges only repeat pixels inside the window), computed at the candidates only: on
    a chip the pixels 50 sigma above the sky are a few per cent, and the full-chip filter cost
    ~0.26 s per chip.

    Parameters
    ----------
    image
        float (ny, nx).
    candidates
        bool (ny, nx): the pixels to test.
    size
        Odd side of the neighbourhood, pixels.

    Returns
    -------
    numpy.ndarray
        bool (ny, nx).
    """
    from scipy.ndimage import maximum_filter

    candidates = np.asarray(candidates, dtype=bool)
    if candidates.sum() > image.size // 8:  # a mostly bright image: one pass over it is cheaper
        return candidates & (image == maximum_filter(image, size=size))
    ys, xs = np.nonzero(candidates)
    values = image[ys, xs]
    is_max = np.ones(ys.size, dtype=bool)
    ny, nx = image.shape
    half = size // 2
    for dy in range(-half, half + 1):
        rows = np.clip(ys + dy, 0, ny - 1)
        for dx in range(-half, half + 1):
            if dy or dx:
                is_max &= values >= image[rows, np.clip(xs + dx, 0, nx - 1)]
    found = np.zeros(image.shape, dtype=bool)
    found[ys[is_max], xs[is_max]] = True
    return found


def star_core_mask(
    clean_image: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    nsigma: float = 50.0,
    saturation_e: float | None = None,
) -> np.ndarray:
    """Core pixels (3x3 around the peak) of bright compact sources in a CR-free image.

    Parameters
    ----------
    clean_image
        float (ny, nx), electrons: drizzlepac's blotted median (``*_blt.fits``) or a noiseless model.
    valid
        Optional bool (ny, nx): only peaks on valid pixels count.
    nsigma
        Peak height above the sky, in units of the sky's clipped standard deviation.
    saturation_e
        Peaks above this level are skipped (saturated cores are masked as invalid anyway).

    Returns
    -------
    numpy.ndarray
        bool (ny, nx).
    """
    from astropy.stats import sigma_clipped_stats

    image = np.nan_to_num(np.asarray(clean_image, dtype=np.float32))
    _, median, std = sigma_clipped_stats(image[::4, ::4], sigma=3.0, maxiters=5)
    threshold = median + nsigma * max(float(std), 1e-3)
    peaks = local_maxima(image, image > threshold, size=5)
    if saturation_e is not None:
        peaks &= image < saturation_e
    if valid is not None:
        peaks &= np.asarray(valid, dtype=bool)
    return dilate_rectangle(peaks, (3, 3))


def _worst(statuses: Iterable[str]) -> QualityStatus:
    worst = max(statuses, key=lambda s: _RANK[s], default="ok")
    return worst  # type: ignore[return-value]


def assess(
    chips: Iterable[ChipQuality],
    *,
    expected_rate_per_cm2_s: float,
    alignment_rms_px: float | None,
    alignment_status: str | None,
    alignment_matches: int = 0,
    header_error_px: float | None = None,
    thresholds: QualityThresholds | None = None,
) -> tuple[QualityStatus, tuple[str, ...]]:
    """Apply the quality gates to one exposure's chips.

    Parameters
    ----------
    chips
        Per-chip numbers.
    expected_rate_per_cm2_s
        Expected CR event rate (profile or simulator), events cm⁻² s⁻¹.
    alignment_rms_px
        RMS of the residuals of the visit's relative fit, pixels (``None``: not measured); mostly
        centroid noise. The alignment error itself is estimated as ``rms / sqrt(matches)``.
    alignment_status
        :class:`~crlib.records.AlignmentResult` status, or ``None`` if alignment was skipped.
    alignment_matches
        Fewest matches of any fitted exposure.
    header_error_px
        Largest misalignment of the exposures alignment left on their header WCS, measured on source
        pairs (:func:`crlib.align.verify.header_error_px`; ``inf``: not measurable). For a
        ``not_aligned`` visit it replaces the blanket "not aligned" verdict. ``None``: no exposure
        was left on its header WCS by a refused fit.
    thresholds
        Gate limits (defaults: :class:`QualityThresholds`).

    Returns
    -------
    tuple
        ``(status, reasons)``; reasons name the gate, the value and the limit.
    """
    limits = thresholds or QualityThresholds()
    verdicts: list[tuple[str, str]] = []
    if alignment_status in ("not_aligned", "failed") and header_error_px is None:
        verdicts.append(("suspect", f"alignment {alignment_status}: star cores may be flagged as CR"))
    if header_error_px is not None and not math.isfinite(header_error_px):
        verdicts.append(("suspect", "header WCS kept, its misalignment could not be measured"))
    elif header_error_px is not None and header_error_px > limits.alignment_error_suspect_px:
        limit = limits.alignment_error_suspect_px
        verdicts.append(("suspect", f"header WCS kept, misaligned by ~{header_error_px:.3f} px > {limit}"))
    if alignment_rms_px is not None:
        if alignment_rms_px > limits.alignment_rms_failed_px:
            verdicts.append(
                ("failed", f"alignment rms {alignment_rms_px:.3f} px > {limits.alignment_rms_failed_px}")
            )
        elif alignment_rms_px > limits.alignment_rms_suspect_px:
            verdicts.append(
                ("suspect", f"alignment rms {alignment_rms_px:.3f} px > {limits.alignment_rms_suspect_px}")
            )
        if alignment_matches > 0:
            error = alignment_rms_px / alignment_matches**0.5
            if error > limits.alignment_error_suspect_px:
                verdicts.append(
                    ("suspect", f"alignment error ~{error:.3f} px > {limits.alignment_error_suspect_px}")
                )
    for chip in chips:
        name = f"chip {chip.chip}"
        if chip.valid_fraction < limits.valid_fraction_failed:
            verdicts.append(
                (
                    "failed",
                    f"{name}: valid fraction {chip.valid_fraction:.3f} < {limits.valid_fraction_failed}",
                )
            )
            continue
        if chip.valid_fraction < limits.valid_fraction_suspect:
            verdicts.append(
                (
                    "suspect",
                    f"{name}: valid fraction {chip.valid_fraction:.3f} < {limits.valid_fraction_suspect}",
                )
            )
        if chip.cr_fraction > limits.cr_fraction_failed:
            verdicts.append(
                ("failed", f"{name}: CR pixel fraction {chip.cr_fraction:.3f} > {limits.cr_fraction_failed}")
            )
        expected_events = expected_rate_per_cm2_s * chip.valid_pixels * chip.pixel_area_cm2 * chip.exptime_s
        if expected_events >= limits.min_expected_events:
            ratio = chip.cr_events / expected_events
            text = f"{name}: CR rate {chip.cr_rate_per_cm2_s:.2f}/cm2/s is {ratio:.2f}x the expected"
            if ratio < limits.cr_rate_ratio_low_failed or ratio > limits.cr_rate_ratio_high_failed:
                verdicts.append(("failed", text))
            elif ratio < limits.cr_rate_ratio_low_suspect or ratio > limits.cr_rate_ratio_high_suspect:
                verdicts.append(("suspect", text))
        contamination = chip.star_core_contamination
        excess = chip.star_core_excess
        if (
            contamination is not None
            and excess is not None
            and chip.star_core_pixels >= limits.min_star_core_pixels
        ):
            share = f"{100 * contamination:.1f}% of {chip.star_core_pixels}"
            text = (
                f"{name}: {share} star-core pixels flagged as CR "
                f"({100 * excess:.1f}% above the chip's CR pixel fraction)"
            )
            if excess > limits.star_core_failed:
                verdicts.append(("failed", text))
            elif excess > limits.star_core_suspect:
                verdicts.append(("suspect", text))
    status = _worst(v[0] for v in verdicts)
    return status, tuple(reason for _, reason in verdicts)
