"""The results database schema as a typed SQLAlchemy 2.0 ORM.

Natural keys are the primary keys wherever the domain has one (``rootname``, ``visit``,
``proposal_id``, ``(rootname, chip)`` ...), so repository upserts are single
``INSERT ... ON CONFLICT`` statements. Every CHECK constraint is named after the column it
guards (``ck_<table>_<column>``), which lets :mod:`crlib.db.repo` turn a rejection into an
error naming the field.

The schema is created and evolved only by the Alembic migrations in
:mod:`crlib.db.migrations`; deployments never call ``create_all``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from crlib.db.vocabulary import (
    FIELD_TYPE_METHODS,
    LABELLING_METHODS,
    MANIFEST_SPLITS,
    METRIC_TRUTH_STATUSES,
    RUN_STATUSES,
    SPLITS,
    TRUTH_METHODS,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def finite(column: str, *, minimum: float | None = 0.0, maximum: float | None = None) -> str:
    """SQL condition: ``column`` is a finite number within the bounds (NULL passes).

    PostgreSQL orders ``NaN`` above ``Infinity``, so ``< 'Infinity'`` rejects both.
    """
    parts = [f"{column} < 'Infinity'::float8", f"{column} > '-Infinity'::float8"]
    if minimum is not None:
        parts.append(f"{column} >= {minimum!r}")
    if maximum is not None:
        parts.append(f"{column} <= {maximum!r}")
    return "(" + " AND ".join(parts) + ")"


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL condition: ``column`` is one of ``values``."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def now_column() -> Any:
    """A ``timestamptz`` column defaulting to the transaction time."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --------------------------------------------------------------------------- archive
class Proposal(Base):
    """An HST proposal (programme)."""

    __tablename__ = "proposals"
    __table_args__ = (CheckConstraint("proposal_id > 0", name="proposal_id"),)

    proposal_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    instrument: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[dt.datetime] = now_column()


class Visit(Base):
    """One visit (``ipppss``) of a proposal."""

    __tablename__ = "visits"
    __table_args__ = (CheckConstraint("visit ~ '^[a-z0-9]{6}$'", name="visit"),)

    visit: Mapped[str] = mapped_column(String(6), primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.proposal_id"), index=True)
    instrument: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[dt.datetime] = now_column()


class Filter(Base):
    """Lookup table of known filter names (seeded by the migrations)."""

    __tablename__ = "filters"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)


class Exposure(Base):
    """One exposure as listed by the archive plus the screening header summary."""

    __tablename__ = "exposures"
    __table_args__ = (
        CheckConstraint("rootname ~ '^[a-z0-9]{9}$'", name="rootname"),
        CheckConstraint("left(rootname, 6) = visit", name="visit"),
        CheckConstraint(finite("exptime_s"), name="exptime_s"),
        CheckConstraint(finite("t_min_mjd"), name="t_min_mjd"),
        CheckConstraint(finite("t_max_mjd") + " AND t_max_mjd >= t_min_mjd", name="t_max_mjd"),
        CheckConstraint(finite("release_mjd"), name="release_mjd"),
        CheckConstraint(finite("ra_deg", maximum=360.0), name="ra_deg"),
        CheckConstraint(finite("dec_deg", minimum=-90.0, maximum=90.0), name="dec_deg"),
        CheckConstraint("size_bytes >= 0", name="size_bytes"),
        CheckConstraint(
            one_of("field_type", ("globular_cluster", "extragalactic", "resolved_galaxy")), name="field_type"
        ),
        CheckConstraint(one_of("field_type_method", FIELD_TYPE_METHODS), name="field_type_method"),
        CheckConstraint(
            "field_type IS NULL OR (field_type_method IS NOT NULL AND "
            + one_of("field_type_method", LABELLING_METHODS)
            + ")",
            name="field_type_labelled",
        ),
        Index("ix_exposures_obs_date_filter", "obs_date", "filter"),
    )

    rootname: Mapped[str] = mapped_column(String(9), primary_key=True)
    visit: Mapped[str] = mapped_column(ForeignKey("visits.visit"), index=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.proposal_id"), index=True)
    instrument: Mapped[str] = mapped_column(String(16))
    detector: Mapped[str] = mapped_column(String(8))
    filter: Mapped[str] = mapped_column(ForeignKey("filters.name"), index=True)
    exptime_s: Mapped[float] = mapped_column(Float)
    t_min_mjd: Mapped[float] = mapped_column(Float)
    t_max_mjd: Mapped[float] = mapped_column(Float)
    obs_date: Mapped[dt.date] = mapped_column(Date)
    release_mjd: Mapped[float | None] = mapped_column(Float)
    target_name: Mapped[str] = mapped_column(String(68))
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    field_type: Mapped[str | None] = mapped_column(String(32))
    #: How ``field_type`` was decided (:data:`FIELD_TYPE_METHODS`); see :mod:`crlib.classify`.
    field_type_method: Mapped[str | None] = mapped_column(String(16))
    product_filename: Mapped[str] = mapped_column(String(128))
    product_uri: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(160))
    header_summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    recorded_at: Mapped[dt.datetime] = now_column()


class ArchiveWatermark(Base):
    """How far (MJD of release) polling of one archive source has got."""

    __tablename__ = "archive_watermarks"
    __table_args__ = (CheckConstraint(finite("mjd"), name="mjd"),)

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    mjd: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = now_column()


# --------------------------------------------------------------------------- runs
class PipelineRun(Base):
    """One run of a pipeline (an Airflow DAG run or a CLI invocation)."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        CheckConstraint(one_of("status", RUN_STATUSES), name="status"),
        CheckConstraint("length(trigger) > 0", name="trigger"),
        CheckConstraint("finished_at IS NULL OR finished_at >= started_at", name="finished_at"),
        Index("ix_pipeline_runs_started_at", "started_at"),
        Index(
            "ix_pipeline_runs_running",
            "status",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), unique=True)
    dag_id: Mapped[str] = mapped_column(String(250))
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    proposal_id: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    message: Mapped[str | None] = mapped_column(Text)
    #: Last sign of life: every stage of the run touches it (see :mod:`crlib.db.runs`).
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: ``host:pid`` of a run that lives in one process (``crlib run``); ``None`` for Airflow runs.
    owner: Mapped[str | None] = mapped_column(String(250))


# --------------------------------------------------------------------------- screening
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


# --------------------------------------------------------------------------- alignment
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


# --------------------------------------------------------------------------- truth
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


# --------------------------------------------------------------------------- models
class Model(Base):
    """A registered model name (e.g. ``deepcr-acs-wfc``)."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = now_column()


class ModelVersion(Base):
    """One version of a model: shipped with the deepCR package or registered in MLflow.

    ``source`` is NULL while a version is known only from a prediction that named it.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        CheckConstraint(one_of("source", ("deepcr_package", "mlflow")), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(16))
    uri: Mapped[str | None] = mapped_column(String(1024))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    registered_at: Mapped[dt.datetime] = now_column()
    #: Dataset whose training manifest gave :class:`ModelVersionSplit` (``external``: weights crlib
    #: did not train, every visit unseen; NULL: not recorded, every visit counts as unseen).
    training_dataset: Mapped[str | None] = mapped_column(String(128))


class ModelVersionSplit(Base):
    """A visit of a model version's training manifest and the split it was in.

    Recorded when the version is registered (:func:`crlib.db.repo.record_training_splits`); a
    visit not listed for a version is ``unseen`` by it (as far as crlib knows).
    """

    __tablename__ = "model_version_splits"
    __table_args__ = (
        CheckConstraint(one_of("split", MANIFEST_SPLITS), name="split"),
        CheckConstraint("visit ~ '^[a-z0-9]{6}$'", name="visit"),
    )

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    visit: Mapped[str] = mapped_column(String(6), primary_key=True)
    split: Mapped[str] = mapped_column(String(10))


class ModelAliasEvent(Base):
    """History of alias assignments (``champion``/``challenger``); the latest per alias is current."""

    __tablename__ = "model_alias_history"
    __table_args__ = (Index("ix_model_alias_history_model_alias", "model_id", "alias", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    reason: Mapped[str | None] = mapped_column(Text)
    assigned_at: Mapped[dt.datetime] = now_column()


# --------------------------------------------------------------------------- predictions and metrics
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


def encoded_histogram(column: str) -> str:
    """SQL condition: ``column`` holds ``n_bins`` counts in :mod:`crlib.db.histcodec`'s encoding."""
    return (
        f"CASE WHEN length({column}) < 2 THEN false ELSE get_byte({column}, 0) IN (0, 1, 2, 3, 4, 8) "
        f"AND length({column}) = 2 + 10 * get_byte({column}, 1) + n_bins * get_byte({column}, 0) END"
    )


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


class SummaryRefresh(Base):
    """When each summary (``cr_rate_daily``, ``performance_monthly``, ``performance_total``) was refreshed."""

    __tablename__ = "summary_refreshes"

    view_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    refreshed_at: Mapped[dt.datetime] = now_column()
    seconds: Mapped[float] = mapped_column(Float)


# --------------------------------------------------------------------------- statistics summaries
class CrRateDaily(Base):
    """CR sums per observation day x filter x field type x chip x exposure-time bin (a summary).

    Written only by :func:`crlib.db.summaries.refresh_summaries`; ``field_type`` is ``unknown``
    where the exposure has none, ``exptime_bin_s`` the lower edge of the exposure-time bin.
    """

    __tablename__ = "cr_rate_daily"

    obs_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    filter: Mapped[str] = mapped_column(String(16), primary_key=True)
    field_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    chip: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    exptime_bin_s: Mapped[float] = mapped_column(Float, primary_key=True)
    n_chips: Mapped[int] = mapped_column(BigInteger)
    cr_pixels: Mapped[int] = mapped_column(BigInteger)
    cr_events: Mapped[int] = mapped_column(BigInteger)
    exptime_s: Mapped[float] = mapped_column(Float)
    rate_exptime: Mapped[float] = mapped_column(Float)


class _PerformanceSums:
    """Columns shared by the performance summaries: confusion sums and summed encoded histograms."""

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    filter: Mapped[str] = mapped_column(String(16), primary_key=True)
    field_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    n_bins: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    split: Mapped[str] = mapped_column(String(10), primary_key=True)
    truth_status: Mapped[str] = mapped_column(String(8), primary_key=True)
    border_px: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    dq_excluded: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    n_exposures: Mapped[int] = mapped_column(BigInteger)
    n_dilated: Mapped[int] = mapped_column(BigInteger)
    tp: Mapped[int] = mapped_column(BigInteger)
    fp: Mapped[int] = mapped_column(BigInteger)
    fn: Mapped[int] = mapped_column(BigInteger)
    tn: Mapped[int] = mapped_column(BigInteger)
    hist_cr: Mapped[bytes] = mapped_column(LargeBinary)
    hist_noncr: Mapped[bytes] = mapped_column(LargeBinary)
    hist_cr_dilated: Mapped[bytes | None] = mapped_column(LargeBinary)
    hist_noncr_dilated: Mapped[bytes | None] = mapped_column(LargeBinary)


class PerformanceMonthly(_PerformanceSums, Base):
    """Pooled counts per model version x month x filter x field type x histogram length x split x
    truth status x scoring rules (a summary).

    ``n_dilated`` of the ``n_exposures`` had dilated histograms (summed in the ``*_dilated``
    columns, NULL when none had). SQL users read the views ``model_performance_monthly`` (unseen
    data on ``ok`` truth) and ``model_performance_monthly_by_split`` (every split and status).
    """

    __tablename__ = "performance_monthly"
    __table_args__ = (
        CheckConstraint("n_exposures > 0", name="n_exposures"),
        CheckConstraint("n_dilated >= 0 AND n_dilated <= n_exposures", name="n_dilated"),
        Index("ix_performance_monthly_month_filter", "month", "filter"),
    )

    month: Mapped[dt.date] = mapped_column(Date, primary_key=True)


class PerformanceTotal(_PerformanceSums, Base):
    """:class:`PerformanceMonthly` summed over all months (view ``model_performance_total``)."""

    __tablename__ = "performance_total"
    __table_args__ = (
        CheckConstraint("n_exposures > 0", name="n_exposures"),
        CheckConstraint("n_dilated >= 0 AND n_dilated <= n_exposures", name="n_dilated"),
    )


class SummaryChange(Base):
    """A (month, filter) cell whose summaries are out of date until the next refresh.

    Written by statement triggers (CR statistics, metrics updates/deletes, exposure changes) and
    by :func:`crlib.db.metric_store.record_metrics`; consumed by ``refresh_summaries``.
    """

    __tablename__ = "summary_changes"
    __table_args__ = (Index("ix_summary_changes_month_filter", "month", "filter"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    month: Mapped[dt.date] = mapped_column(Date)
    filter: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[dt.datetime] = now_column()


def table_of(model: type[Base]) -> Table:
    """The :class:`~sqlalchemy.Table` of a mapped class (typed for Core statements)."""
    return cast(Table, model.__table__)


def constraint_fields() -> dict[str, str]:
    """Map each named constraint to ``table.column`` (for error messages).

    CHECK constraints are named after their column; foreign keys after their local columns.
    """
    fields: dict[str, str] = {}
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            name = str(constraint.name) if constraint.name is not None else None
            if not name:
                continue
            if isinstance(constraint, CheckConstraint):
                column = name.removeprefix(f"ck_{table.name}_")
                fields[name] = f"{table.name}.{column}"
            elif isinstance(constraint, ForeignKeyConstraint):
                fields[name] = f"{table.name}.{', '.join(c.name for c in constraint.columns)}"
    return fields


# --------------------------------------------------------------------------- promotion gate
class PromotionDecisionRow(Base):
    """One decision of the promotion gate: promoted, refused, or a dry run (every one is kept).

    ``comparisons`` holds every compared number (group x FPR x dilation: champion and challenger
    TPR in percent, the difference in points, whether it failed); ``mean_delta_points`` is NULL
    when nothing could be compared.
    """

    __tablename__ = "promotion_decisions"
    __table_args__ = (
        UniqueConstraint(
            "model_id", "challenger_version_id", "decided_at", name="uq_promotion_decisions_decision"
        ),
        CheckConstraint(finite("mean_delta_points", minimum=None), name="mean_delta_points"),
        CheckConstraint(finite("max_drop_points"), name="max_drop_points"),
        CheckConstraint(finite("min_mean_gain_points", minimum=None), name="min_mean_gain_points"),
        CheckConstraint("NOT applied OR (promoted AND NOT dry_run)", name="applied"),
        CheckConstraint("jsonb_typeof(comparisons) = 'array'", name="comparisons"),
        CheckConstraint("length(dataset_id) > 0", name="dataset_id"),
        Index("ix_promotion_decisions_model_decided", "model_id", "decided_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    challenger_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    champion_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    promoted: Mapped[bool] = mapped_column(Boolean)
    applied: Mapped[bool] = mapped_column(Boolean)
    dry_run: Mapped[bool] = mapped_column(Boolean)
    mean_delta_points: Mapped[float | None] = mapped_column(Float)
    max_drop_points: Mapped[float] = mapped_column(Float)
    min_mean_gain_points: Mapped[float] = mapped_column(Float)
    reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    comparisons: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    dataset_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(250))
    recorded_at: Mapped[dt.datetime] = now_column()
