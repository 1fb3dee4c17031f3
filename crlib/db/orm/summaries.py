"""Statistics summary tables (CR rate per day, performance per month and in total) and their bookkeeping."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from crlib.db.orm.base import Base, now_column


class SummaryRefresh(Base):
    """When each summary (``cr_rate_daily``, ``performance_monthly``, ``performance_total``) was refreshed."""

    __tablename__ = "summary_refreshes"

    view_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    refreshed_at: Mapped[dt.datetime] = now_column()
    seconds: Mapped[float] = mapped_column(Float)


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
