"""Per-stage results: screening verdicts, alignment, truth, CR statistics, predictions, metrics."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crlib.db.orm.base import Base, encoded_histogram, finite, now_column, one_of
from crlib.db.vocabulary import (
    METRIC_TRUTH_STATUSES,
    SPLITS,
    TRUTH_METHODS,
)


class ScreeningVerdictRow(Base):
    """The screening verdict of one exposure (its reasons are in :class:`ScreeningReasonRow`)."""

    __tablename__ = "screening_verdicts"
    __table_args__ = (CheckConstraint(one_of("verdict", ("accept", "reject")), name="verdict"),)

    rootname: Mapped[str] = mapped_column(
        ForeignKey("exposures.rootname", ondelete="CASCADE"), primary_key=True
    )
    file: Mapped[str] = mapped_column(String(1024))
    verdict: Mapped[str] = mapped_column(String(8))
    usable_for_training: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[dt.datetime] = now_column()


class ScreeningReasonRow(Base):
    """One rule that fired on an exposure, in the order the rules ran."""

    __tablename__ = "screening_reasons"
    __table_args__ = (
        CheckConstraint(one_of("severity", ("reject", "warning", "info")), name="severity"),
        CheckConstraint("position >= 0", name="position"),
        Index("ix_screening_reasons_rule", "rule"),
    )

    rootname: Mapped[str] = mapped_column(
        ForeignKey("screening_verdicts.rootname", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rule: Mapped[str] = mapped_column(String(64))
    keyword: Mapped[str] = mapped_column(String(64))
    value: Mapped[Any | None] = mapped_column(JSONB, nullable=True)
    message: Mapped[str] = mapped_column(String(1024))
    severity: Mapped[str] = mapped_column(String(8))


class AlignmentResultRow(Base):
    """Alignment of one visit's exposures in one filter.

    A visit observed in several filters is aligned (and drizzled) per filter, so it has a row per
    filter. ``filter`` is ``''`` for rows recorded before migration 0008 whose visit held several
    filters (which set they describe is not known).
    """

    __tablename__ = "alignment_results"
    __table_args__ = (
        CheckConstraint(
            one_of("status", ("aligned_absolute", "aligned_relative", "not_aligned", "failed")), name="status"
        ),
        CheckConstraint("n_matches >= 0", name="n_matches"),
        CheckConstraint(finite("rms_px"), name="rms_px"),
    )

    visit: Mapped[str] = mapped_column(ForeignKey("visits.visit", ondelete="CASCADE"), primary_key=True)
    filter: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="")
    status: Mapped[str] = mapped_column(String(24))
    catalog: Mapped[str | None] = mapped_column(String(64))
    fit_geometry: Mapped[str | None] = mapped_column(String(32))
    n_matches: Mapped[int] = mapped_column(Integer)
    rms_px: Mapped[float | None] = mapped_column(Float)
    wcsname: Mapped[str | None] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(String(2048))
    per_exposure: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    recorded_at: Mapped[dt.datetime] = now_column()


class TruthResultRow(Base):
    """Ground truth of one exposure by one method."""

    __tablename__ = "truth_results"
    __table_args__ = (
        CheckConstraint(one_of("method", ("drizzle", "multiframe")), name="method"),
        CheckConstraint(one_of("status", ("ok", "suspect", "failed")), name="status"),
    )

    rootname: Mapped[str] = mapped_column(
        ForeignKey("exposures.rootname", ondelete="CASCADE"), primary_key=True
    )
    method: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    path: Mapped[str | None] = mapped_column(String(1024))
    reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    recorded_at: Mapped[dt.datetime] = now_column()


class TruthChipRow(Base):
    """Truth summary of one chip of one exposure."""

    __tablename__ = "truth_chips"
    __table_args__ = (
        ForeignKeyConstraint(
            ["rootname", "method"], ["truth_results.rootname", "truth_results.method"], ondelete="CASCADE"
        ),
        CheckConstraint("chip >= 1", name="chip"),
        CheckConstraint("cr_pixels >= 0", name="cr_pixels"),
        CheckConstraint("cr_events >= 0", name="cr_events"),
        CheckConstraint(finite("valid_fraction", maximum=1.0), name="valid_fraction"),
    )

    rootname: Mapped[str] = mapped_column(String(9), primary_key=True)
    method: Mapped[str] = mapped_column(String(16), primary_key=True)
    chip: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cr_pixels: Mapped[int] = mapped_column(BigInteger)
    cr_events: Mapped[int] = mapped_column(BigInteger)
    valid_fraction: Mapped[float] = mapped_column(Float)


class CrStatisticsRow(Base):
    """Cosmic-ray statistics of one chip of one exposure."""

    __tablename__ = "cr_statistics"
    __table_args__ = (
        CheckConstraint("chip >= 1", name="chip"),
        CheckConstraint("cr_pixels >= 0", name="cr_pixels"),
        CheckConstraint("cr_events >= 0", name="cr_events"),
        CheckConstraint(finite("exptime_s"), name="exptime_s"),
        CheckConstraint(finite("rate_per_cm2_s"), name="rate_per_cm2_s"),
    )

    rootname: Mapped[str] = mapped_column(
        ForeignKey("exposures.rootname", ondelete="CASCADE"), primary_key=True
    )
    chip: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cr_pixels: Mapped[int] = mapped_column(BigInteger)
    cr_events: Mapped[int] = mapped_column(BigInteger)
    exptime_s: Mapped[float] = mapped_column(Float)
    rate_per_cm2_s: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[dt.datetime] = now_column()


class PredictionRow(Base):
    """One model version's prediction for one exposure by one code version."""

    __tablename__ = "predictions"
    __table_args__ = (
        CheckConstraint(finite("threshold", maximum=1.0), name="threshold"),
        CheckConstraint(finite("seconds"), name="seconds"),
        CheckConstraint(finite("peak_memory_mb"), name="peak_memory_mb"),
        CheckConstraint(one_of("status", ("ok", "failed")), name="status"),
    )

    rootname: Mapped[str] = mapped_column(
        ForeignKey("exposures.rootname", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    code_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    device: Mapped[str] = mapped_column(String(32))
    seconds: Mapped[float] = mapped_column(Float)
    peak_memory_mb: Mapped[float] = mapped_column(Float)
    path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(2048))
    recorded_at: Mapped[dt.datetime] = now_column()


class ExposureMetricsRow(Base):
    """Scores of one model version against one exposure's truth, with their provenance.

    The four score histograms (CR / non-CR pixels per probability bin, plain and 3x3-dilated) are
    ``bytea`` in the fixed-width encoding of :mod:`crlib.db.histcodec` (``n_bins`` counts each;
    the dilated pair is NULL when it was not measured). SQL: ``hist_decode(hist_cr, n_bins)``.
    Provenance: the truth status, method and gate reasons the scores rest on, the split of the
    exposure's visit for the model version, and the scoring rules (border, DQ exclusion).
    """

    __tablename__ = "exposure_metrics"
    __table_args__ = (
        CheckConstraint("tp >= 0", name="tp"),
        CheckConstraint("fp >= 0", name="fp"),
        CheckConstraint("fn >= 0", name="fn"),
        CheckConstraint("tn >= 0", name="tn"),
        CheckConstraint("jsonb_typeof(tpr_at_fpr) = 'object'", name="tpr_at_fpr"),
        CheckConstraint("jsonb_typeof(tpr_at_fpr_dilated) = 'object'", name="tpr_at_fpr_dilated"),
        CheckConstraint("n_bins >= 1", name="n_bins"),
        CheckConstraint(encoded_histogram("hist_cr"), name="hist_cr"),
        CheckConstraint(encoded_histogram("hist_noncr"), name="hist_noncr"),
        CheckConstraint(encoded_histogram("hist_cr_dilated"), name="hist_cr_dilated"),
        CheckConstraint(
            "(hist_cr_dilated IS NULL) = (hist_noncr_dilated IS NULL) AND "
            + encoded_histogram("hist_noncr_dilated"),
            name="hist_noncr_dilated",
        ),
        CheckConstraint(
            one_of("field_type", ("globular_cluster", "extragalactic", "resolved_galaxy")), name="field_type"
        ),
        CheckConstraint(one_of("truth_status", METRIC_TRUTH_STATUSES), name="truth_status"),
        CheckConstraint(one_of("truth_method", TRUTH_METHODS), name="truth_method"),
        CheckConstraint(one_of("split", SPLITS), name="split"),
        CheckConstraint("border_px >= 0", name="border_px"),
    )

    rootname: Mapped[str] = mapped_column(
        ForeignKey("exposures.rootname", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    field_type: Mapped[str | None] = mapped_column(String(32))
    tp: Mapped[int] = mapped_column(BigInteger)
    fp: Mapped[int] = mapped_column(BigInteger)
    fn: Mapped[int] = mapped_column(BigInteger)
    tn: Mapped[int] = mapped_column(BigInteger)
    tpr_at_fpr: Mapped[dict[str, float]] = mapped_column(JSONB)
    tpr_at_fpr_dilated: Mapped[dict[str, float]] = mapped_column(JSONB)
    hist_cr: Mapped[bytes] = mapped_column(LargeBinary)
    hist_noncr: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[dt.datetime] = now_column()
    n_bins: Mapped[int] = mapped_column(SmallInteger)
    hist_cr_dilated: Mapped[bytes | None] = mapped_column(LargeBinary)
    hist_noncr_dilated: Mapped[bytes | None] = mapped_column(LargeBinary)
    truth_status: Mapped[str] = mapped_column(String(8), server_default="unknown")
    truth_method: Mapped[str | None] = mapped_column(String(16))
    truth_reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    split: Mapped[str] = mapped_column(String(10), server_default="unseen")
    border_px: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    dq_excluded: Mapped[bool] = mapped_column(Boolean, server_default="false")
