"""Promotion-gate decisions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

``promotion_decisions``: every decision of the promotion gate (``crlib promote`` and the
``crlib_promote_model`` DAG), promoted, refused or dry run, with the compared numbers as JSONB,
the thresholds used, the test dataset and the run that asked for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``promotion_decisions``."""
    op.create_table(
        "promotion_decisions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("challenger_version_id", sa.Integer(), nullable=False),
        sa.Column("champion_version_id", sa.Integer(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("mean_delta_points", sa.Float(), nullable=True),
        sa.Column("max_drop_points", sa.Float(), nullable=False),
        sa.Column("min_mean_gain_points", sa.Float(), nullable=False),
        sa.Column("reasons", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column(
            "comparisons", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
        sa.Column("dataset_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(mean_delta_points < 'Infinity'::float8 AND mean_delta_points > '-Infinity'::float8)",
            name=op.f("ck_promotion_decisions_mean_delta_points"),
        ),
        sa.CheckConstraint(
            "(max_drop_points < 'Infinity'::float8 AND max_drop_points > '-Infinity'::float8 "
            "AND max_drop_points >= 0.0)",
            name=op.f("ck_promotion_decisions_max_drop_points"),
        ),
        sa.CheckConstraint(
            "(min_mean_gain_points < 'Infinity'::float8 AND min_mean_gain_points > '-Infinity'::float8)",
            name=op.f("ck_promotion_decisions_min_mean_gain_points"),
        ),
        sa.CheckConstraint(
            "NOT applied OR (promoted AND NOT dry_run)", name=op.f("ck_promotion_decisions_applied")
        ),
        sa.CheckConstraint(
            "jsonb_typeof(comparisons) = 'array'", name=op.f("ck_promotion_decisions_comparisons")
        ),
        sa.CheckConstraint("length(dataset_id) > 0", name=op.f("ck_promotion_decisions_dataset_id")),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_promotion_decisions_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["challenger_version_id"],
            ["model_versions.id"],
            name=op.f("fk_promotion_decisions_challenger_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["champion_version_id"],
            ["model_versions.id"],
            name=op.f("fk_promotion_decisions_champion_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_decisions")),
        sa.UniqueConstraint(
            "model_id",
            "challenger_version_id",
            "decided_at",
            name=op.f("uq_promotion_decisions_decision"),
        ),
    )
    op.create_index(
        "ix_promotion_decisions_model_decided",
        "promotion_decisions",
        ["model_id", "decided_at"],
        unique=False,
    )


def downgrade() -> None:
    """Drop ``promotion_decisions``."""
    op.drop_index("ix_promotion_decisions_model_decided", table_name="promotion_decisions")
    op.drop_table("promotion_decisions")
