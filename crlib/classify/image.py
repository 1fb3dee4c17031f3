"""Field type from an exposure's pixels, for exposures whose archive metadata cannot place them.

The measurements (CR-robust point-source density, extended light, saturated stars) are in
:mod:`crlib.classify.features`; this module turns them into a label:

=================  ==========================================================================
globular_cluster   very dense PSF-like point sources (peak density ≥ ``dense_per_mpx``) on a
                   flat background (extended fraction ≤ ``flat_max`` and area ≤
                   ``flat_max_mpx``); or dense on light that is not flat (extended, or between
                   flat and extended) with many saturated stars in the densest area (a Galactic
                   cluster core: its giants saturate)
resolved_galaxy    extended light (fraction ≥ ``extended_min`` or area ≥ ``extended_min_mpx``)
                   with resolved point sources (peak density ≥ ``resolved_min_per_mpx``), and
                   few saturated stars where it is also dense
extragalactic      sparse point sources (peak density ≤ ``sparse_per_mpx``) on flat sky
unknown            anything else: between the limits, or matching two classes at once
=================  ==========================================================================

The limits leave gaps between the classes on purpose: features in a gap give ``unknown`` (the
pipeline then leaves the exposure out of per-field-type statistics) rather than a guess. The
confidence of a label is ``0.5 + 0.5 * margin``, the margin being the smallest distance (dex for
densities, fraction of the limit for the extended fraction, capped at 1) by which the features
clear the chosen class's limits.

:func:`decide` and :func:`classify_arrays` take numpy arrays only and open no file; the read step
(:func:`~crlib.classify.files.read_chips`, :func:`~crlib.classify.files.classify_files`) is
:mod:`crlib.classify.files`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crlib.classify.features import (
    CLUSTER_DENSITY_PER_MPX,
    DEFAULT_DETECTION,
    DetectionSettings,
    ImageFeatures,
    combine_features,
    measure_features,
)
from crlib.classify.labels import FieldTypeLabel, unknown_label

log = logging.getLogger(__name__)

#: Smallest usable exposure (valid pixels).
MIN_VALID_PX = 128 * 128


@dataclass(frozen=True, slots=True)
class ImageThresholds:
    """Decision limits of the image classifier (densities per 10^6 pixels).

    Attributes
    ----------
    dense_per_mpx
        Globular cluster: peak point-source density at least this.
    sparse_per_mpx
        Extragalactic: peak point-source density at most this.
    resolved_min_per_mpx
        Resolved galaxy: peak point-source density at least this (resolved into stars).
    extended_min, extended_min_mpx
        Resolved galaxy: extended fraction at least ``extended_min`` *or* extended area at least
        ``extended_min_mpx`` (10^6 pixels; a galaxy centre in one corner of a full frame).
    flat_max, flat_max_mpx
        Globular cluster (without saturated stars) and extragalactic: extended fraction at most
        ``flat_max`` *and* extended area at most ``flat_max_mpx``.
    saturated_cluster_per_mpx, saturated_galaxy_per_mpx
        A dense field whose light is not flat is a cluster core with at least the first number of
        saturated stars per 10^6 pixels (peak area); if it is also extended, a resolved galaxy with
        at most the second (a nearby galaxy's stars are faint; a Galactic cluster's giants
        saturate); between: unknown.
    """

    dense_per_mpx: float = CLUSTER_DENSITY_PER_MPX
    sparse_per_mpx: float = 500.0
    resolved_min_per_mpx: float = 300.0
    extended_min: float = 0.2
    extended_min_mpx: float = 1.0
    flat_max: float = 0.12
    flat_max_mpx: float = 0.25
    saturated_cluster_per_mpx: float = 15.0
    saturated_galaxy_per_mpx: float = 8.0


DEFAULT_THRESHOLDS = ImageThresholds()

_WHY = {
    "globular_cluster": "very dense point sources on flat background",
    "globular_cluster_core": "very dense point sources and many saturated stars on cluster light",
    "resolved_galaxy": "extended light with many resolved point sources",
    "extragalactic": "sparse point sources on flat sky",
}


def _dex(value: float, limit: float) -> float:
    """log10(value / limit): positive when ``value`` exceeds ``limit``."""
    if value <= 0:
        return -np.inf
    if limit <= 0:
        return np.inf
    return float(np.log10(value / limit))


def _above(value: float, limit: float) -> float:
    """(value - limit) / limit: positive when ``value`` exceeds ``limit``."""
    return float((value - limit) / limit) if limit > 0 else np.inf


def decide(features: ImageFeatures, *, thresholds: ImageThresholds = DEFAULT_THRESHOLDS) -> FieldTypeLabel:
    """The field type the features support, or ``unknown`` when they fall between the classes.

    Parameters
    ----------
    features
        From :func:`~crlib.classify.features.measure_features` or
        :func:`~crlib.classify.features.combine_features`.
    thresholds
        Decision limits.

    Returns
    -------
    FieldTypeLabel
        Method ``image`` (or ``unknown``); the reason quotes the features.
    """
    needed = (
        features.point_density_peak,
        features.extended_fraction,
        features.extended_area_mpx,
        features.saturated_density_peak,
    )
    if features.valid_px < MIN_VALID_PX or not all(np.isfinite(v) for v in needed):
        return unknown_label(f"image: too few usable pixels ({features.valid_px})")
    t = thresholds
    peak, saturated = features.point_density_peak, features.saturated_density_peak
    fraction, area = features.extended_fraction, features.extended_area_mpx
    flat = min((t.flat_max - fraction) / t.flat_max, (t.flat_max_mpx - area) / t.flat_max_mpx)
    extended = max(_above(fraction, t.extended_min), _above(area, t.extended_min_mpx))
    margins: dict[str, float] = {}
    gc = min(_dex(peak, t.dense_per_mpx), flat)
    if gc > 0:
        margins["globular_cluster"] = gc
    ex = min(_dex(t.sparse_per_mpx, peak), flat)
    if ex > 0:
        margins["extragalactic"] = ex
    rg = min(_dex(peak, t.resolved_min_per_mpx), extended)
    why = ""
    if peak >= t.dense_per_mpx and flat <= 0:
        # Dense on light that is not flat (extended, or between flat and extended): a cluster core
        # and a crowded galaxy look alike but for the giants, which saturate in a Galactic cluster.
        core = min(_dex(peak, t.dense_per_mpx), _dex(saturated, t.saturated_cluster_per_mpx))
        if core > 0:
            margins["globular_cluster"] = core
            why = _WHY["globular_cluster_core"]
        elif rg <= 0:
            pass  # neither flat nor extended, few giants: between the classes
        elif saturated <= t.saturated_galaxy_per_mpx:
            margins["resolved_galaxy"] = min(rg, _dex(t.saturated_galaxy_per_mpx, max(saturated, 1e-3)))
        else:
            return unknown_label(
                f"image: dense and extended, {saturated:.0f} saturated stars/Mpx is between a "
                f"galaxy and a cluster core: {features.describe()}"
            )
    elif rg > 0:
        margins["resolved_galaxy"] = rg
    if len(margins) != 1:
        state = "features between the classes" if not margins else f"features fit {' and '.join(margins)}"
        return unknown_label(f"image: {state}: {features.describe()}")
    ((name, margin),) = margins.items()
    confidence = round(0.5 + 0.5 * min(margin, 1.0), 3)
    return FieldTypeLabel(name, "image", confidence, (f"image: {why or _WHY[name]}: {features.describe()}",))


def classify_arrays(
    exposures: Sequence[Sequence[NDArray[Any]]],
    *,
    dq: Sequence[Sequence[NDArray[Any] | None] | None] | None = None,
    settings: DetectionSettings = DEFAULT_DETECTION,
    thresholds: ImageThresholds = DEFAULT_THRESHOLDS,
) -> tuple[FieldTypeLabel, ImageFeatures]:
    """Classify one exposure, or one visit from the median features of its exposures.

    Parameters
    ----------
    exposures
        Per exposure, its chips' science arrays, each (ny, nx), electrons.
    dq
        Per exposure, its chips' DQ arrays (or ``None``).
    settings
        Detection settings (PSF FWHM, thresholds).
    thresholds
        Decision limits.

    Returns
    -------
    label, features
        The label (method ``image`` or ``unknown``) and the combined features behind it.
    """
    if not exposures:
        raise ValueError("classify_arrays needs at least one exposure")
    dq_lists: Sequence[Sequence[NDArray[Any] | None] | None] = (
        dq if dq is not None else [None] * len(exposures)
    )
    per_exposure = [
        measure_features(chips, dq=flags, settings=settings)
        for chips, flags in zip(exposures, dq_lists, strict=True)
    ]
    features = combine_features(per_exposure)
    label = decide(features, thresholds=thresholds)
    log.debug("image classifier: %s", label.describe())
    return label, features
