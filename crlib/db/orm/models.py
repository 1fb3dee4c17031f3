"""Model registry mirror: models, versions, their training splits, alias events, promotion decisions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crlib.db.orm.base import Base, finite, now_column, one_of
from crlib.db.vocabulary import MANIFEST_SPLITS


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
