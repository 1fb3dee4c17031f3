"""Alignment per filter: a multi-filter visit has one alignment row per filter.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

Why: real ACS/WFC visits often hold several filters, and the truth stage aligns and drizzles each
filter's exposures on their own (a median of mixed bandpasses labels colours as cosmic rays), but
``alignment_results`` was keyed by visit alone: the second filter's alignment replaced the first's.

- ``alignment_results.filter`` (e.g. ``F606W``) joins the primary key: ``(visit, filter)``.
- Backfill: rows of visits whose exposures are all in one filter get that filter; rows of visits
  recorded with several filters keep ``''`` (which set the single row described is not known).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the filter column, backfill it from the visit's exposures, widen the primary key."""
    op.add_column(
        "alignment_results", sa.Column("filter", sa.String(length=16), server_default="", nullable=False)
    )
    op.execute(
        "UPDATE alignment_results AS a SET filter = f.filter "
        "FROM (SELECT visit, min(filter) AS filter FROM exposures GROUP BY visit "
        "      HAVING count(DISTINCT filter) = 1) AS f "
        "WHERE f.visit = a.visit"
    )
    op.drop_constraint(op.f("pk_alignment_results"), "alignment_results", type_="primary")
    op.create_primary_key(op.f("pk_alignment_results"), "alignment_results", ["visit", "filter"])


def downgrade() -> None:
    """Keep one row per visit (the first filter's), then drop the column."""
    op.execute(
        "DELETE FROM alignment_results AS a USING alignment_results AS b "
        "WHERE a.visit = b.visit AND a.filter > b.filter"
    )
    op.drop_constraint(op.f("pk_alignment_results"), "alignment_results", type_="primary")
    op.create_primary_key(op.f("pk_alignment_results"), "alignment_results", ["visit"])
    op.drop_column("alignment_results", "filter")
