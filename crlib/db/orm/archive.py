"""Archive-side tables: proposals, visits, filters, exposures, watermarks, pipeline runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crlib.db.orm.base import Base, finite, now_column, one_of
from crlib.db.vocabulary import (
    FIELD_TYPE_METHODS,
    LABELLING_METHODS,
    RUN_STATUSES,
)


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
