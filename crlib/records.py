"""Frozen records passed between stages (and to the results database).

Each stage returns these; the DAGs pass only ids/paths between tasks, and
:mod:`crlib.db.repo` upserts them on their natural keys. Arrays never travel in records except
in :class:`ExposureMetrics` (score histograms, a few thousand integers).

Sections are owned by the stage that produces them; add fields at the end with defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["accept", "reject"]
Severity = Literal["reject", "warning", "info"]
QualityStatus = Literal["ok", "suspect", "failed"]


def to_dict(record: Any) -> dict[str, Any]:
    """A record as plain JSON-friendly values (tuples become lists)."""
    return asdict(record)


# ----------------------------------------------------------------------------- archive
@dataclass(frozen=True, slots=True)
class Observation:
    """One exposure as an archive lists it (CAOM names in comments).

    Attributes
    ----------
    rootname
        ``ipppssoo`` exposure id, lower case (CAOM ``obs_id``).
    proposal_id
        HST proposal number (``proposal_id``).
    visit
        ``ipppss``: the first six characters of the rootname.
    instrument
        ``ACS/WFC`` or ``WFC3/UVIS`` (``instrument_name``).
    filter
        Filter name, e.g. ``F606W`` (``filters``).
    exptime_s
        Exposure time in seconds (``t_exptime``).
    t_min_mjd, t_max_mjd
        Exposure start/end, MJD (``t_min``/``t_max``).
    release_mjd
        Public release date, MJD (``t_obs_release``).
    target_name
        ``target_name``.
    ra_deg, dec_deg
        Pointing, degrees (``s_ra``/``s_dec``).
    product_filename
        Calibrated product to fetch, e.g. ``jbt122x8q_flc.fits``.
    product_uri
        Where to fetch it: ``mast:HST/product/<file>`` or a local path.
    size_bytes
        Product size if the archive reports it.
    checksum
        ``md5:<hex>`` / ``sha256:<hex>`` if known.
    field_type
        ``globular_cluster`` / ``extragalactic`` / ``resolved_galaxy`` if known.
    field_type_method
        How ``field_type`` was decided: ``simulator``, ``metadata``, ``image``, or ``unknown``
        (every method tried, none decided); ``None``: not classified yet (see
        :mod:`crlib.classify`).
    """

    rootname: str
    proposal_id: int
    visit: str
    instrument: str
    filter: str
    exptime_s: float
    t_min_mjd: float
    t_max_mjd: float
    release_mjd: float
    target_name: str
    ra_deg: float
    dec_deg: float
    product_filename: str
    product_uri: str
    size_bytes: int | None = None
    checksum: str | None = None
    field_type: str | None = None
    field_type_method: str | None = None


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """Outcome of fetching one product."""

    rootname: str
    path: str
    size_bytes: int
    checksum: str
    attempts: int
    status: Literal["downloaded", "cached", "failed"]
    reason: str | None = None


# ----------------------------------------------------------------------------- screening
@dataclass(frozen=True, slots=True)
class ScreeningReason:
    """Why a rule fired on a file."""

    rule: str
    keyword: str
    value: Any
    message: str
    severity: Severity = "reject"


@dataclass(frozen=True, slots=True)
class ScreeningVerdict:
    """The screening verdict of one file."""

    file: str
    rootname: str
    verdict: Verdict
    usable_for_training: bool
    reasons: tuple[ScreeningReason, ...] = ()
    header_summary: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- alignment
@dataclass(frozen=True, slots=True)
class AlignmentResult:
    """Result of aligning one visit (relative fit and, when possible, absolute fit)."""

    visit: str
    status: Literal["aligned_absolute", "aligned_relative", "not_aligned", "failed"]
    catalog: str | None
    fit_geometry: str | None
    n_matches: int
    rms_px: float | None
    wcsname: str | None
    reason: str | None = None
    per_exposure: dict[str, dict[str, float]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- truth
@dataclass(frozen=True, slots=True)
class ChipTruth:
    """Truth summary for one chip of one exposure."""

    chip: int
    cr_pixels: int
    cr_events: int
    valid_fraction: float


@dataclass(frozen=True, slots=True)
class TruthResult:
    """Ground-truth CR mask for one exposure (``<rootname>_crtruth.fits``)."""

    rootname: str
    method: Literal["drizzle", "multiframe"]
    status: QualityStatus
    path: str | None
    chips: tuple[ChipTruth, ...] = ()
    reasons: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- inference
@dataclass(frozen=True, slots=True)
class PredictionResult:
    """A model's prediction for one exposure (``<rootname>_crpred.fits``)."""

    rootname: str
    model_name: str
    model_version: str
    code_version: str
    threshold: float
    device: str
    seconds: float
    peak_memory_mb: float
    path: str
    status: Literal["ok", "failed"] = "ok"
    reason: str | None = None


# ----------------------------------------------------------------------------- metrics
@dataclass(frozen=True, slots=True)
class ExposureMetrics:
    """Scores of one prediction against one truth.

    Attributes
    ----------
    tp, fp, fn, tn
        Confusion counts at the operating threshold over valid pixels.
    tpr_at_fpr
        ``{"0.0005": tpr, "0.005": tpr}`` without dilation.
    tpr_at_fpr_dilated
        Same with the 3x3 dilation of the predicted mask (deepCR's convention).
    hist_cr, hist_noncr
        Counts of CR / non-CR valid pixels per probability bin (see :mod:`crlib.metrics`).
    hist_cr_dilated, hist_noncr_dilated
        The same for the dilated prediction (a 3x3-cross maximum filter of the probabilities, so
        that thresholding it equals dilating the thresholded mask), for pooled dilated ROCs.
    truth_status, truth_method, truth_reasons
        The truth the scores rest on: its status (``ok``/``suspect``; ``None``: the results
        database takes it from the recorded truth), method and quality-gate reasons.
    split
        ``train``/``validation``/``test``/``unseen``: the exposure's visit in the predicting
        model version's training manifest. Set by the results database (from the training splits
        recorded for the model version); a value given on recording must agree with it.
    border_px, dq_excluded
        The scoring rules applied: pixels discarded along each chip edge, and whether the FLC's
        DQ-flagged pixels were left out (:class:`crlib.profiles.ScoringRules`).
    """

    rootname: str
    model_name: str
    model_version: str
    tp: int
    fp: int
    fn: int
    tn: int
    tpr_at_fpr: dict[str, float]
    tpr_at_fpr_dilated: dict[str, float]
    hist_cr: tuple[int, ...]
    hist_noncr: tuple[int, ...]
    field_type: str | None = None
    hist_cr_dilated: tuple[int, ...] = ()
    hist_noncr_dilated: tuple[int, ...] = ()
    truth_status: str | None = None
    truth_method: str | None = None
    truth_reasons: tuple[str, ...] = ()
    split: str | None = None
    border_px: int = 0
    dq_excluded: bool = False


@dataclass(frozen=True, slots=True)
class CrStatistics:
    """Cosmic-ray statistics of one chip of one exposure."""

    rootname: str
    chip: int
    cr_pixels: int
    cr_events: int
    exptime_s: float
    rate_per_cm2_s: float
