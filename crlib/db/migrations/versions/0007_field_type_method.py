"""Field type with its method: how each exposure's field type was decided.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Why: the field type was read from a CAOM column only the simulator writes, so on real MAST
metadata every exposure got NULL and the per-field-type statistics, training strata and the
promotion gate silently collapsed. Labels now come from the simulator's column, the metadata rules
(:mod:`crlib.classify.metadata`) or the image classifier (:mod:`crlib.classify.image`), and the
database says which.

- ``exposures.field_type_method``: ``simulator``, ``metadata``, ``image`` or ``unknown`` (no
  method could decide; ``field_type`` NULL); NULL only for rows recorded before this migration
  whose field type is also NULL (nothing was decided for them).
- A field type is never stored without its method: ``field_type`` non-NULL implies a method among
  ``simulator``/``metadata``/``image``.
- Backfill: rows with a field type get ``simulator`` (until now only the simulator's column could
  set it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# Same text as the ORM's ``CheckConstraint``s (``crlib.db.orm.Exposure``); NULL passes a CHECK.
METHOD_CHECK = "field_type_method IN ('simulator', 'metadata', 'image', 'unknown')"
LABEL_CHECK = (
    "field_type IS NULL OR (field_type_method IS NOT NULL "
    "AND field_type_method IN ('simulator', 'metadata', 'image'))"
)


def upgrade() -> None:
    """Add the method column, backfill it, and tie field type and method together."""
    op.add_column("exposures", sa.Column("field_type_method", sa.String(length=16), nullable=True))
    op.execute("UPDATE exposures SET field_type_method = 'simulator' WHERE field_type IS NOT NULL")
    op.create_check_constraint(op.f("ck_exposures_field_type_method"), "exposures", METHOD_CHECK)
    op.create_check_constraint(op.f("ck_exposures_field_type_labelled"), "exposures", LABEL_CHECK)


def downgrade() -> None:
    """Drop the method column and its checks."""
    op.drop_constraint(op.f("ck_exposures_field_type_labelled"), "exposures", type_="check")
    op.drop_constraint(op.f("ck_exposures_field_type_method"), "exposures", type_="check")
    op.drop_column("exposures", "field_type_method")
