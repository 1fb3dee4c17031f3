"""Honest run outcomes: ``partial`` and ``abandoned`` runs, a heartbeat and an owner.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

- ``pipeline_runs.status`` also takes ``partial`` (finished, some exposures failed) and
  ``abandoned`` (found still ``running`` after its process died or its heartbeat lapsed);
- ``pipeline_runs.heartbeat_at``: last sign of life (every stage of the run touches it);
- ``pipeline_runs.owner``: ``host:pid`` of a run whose whole life is one process (``crlib run``),
  so a later run on the same host can tell at once that it died;
- the ``pipeline_status_nightly`` view counts ``partial`` and ``abandoned`` runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

STATUSES_BEFORE = "('queued', 'running', 'success', 'failed')"
STATUSES_AFTER = "('queued', 'running', 'success', 'partial', 'failed', 'abandoned')"

VIEW_BEFORE = """
CREATE VIEW pipeline_status_nightly AS
SELECT (started_at AT TIME ZONE 'UTC')::date AS night,
       dag_id,
       count(*) AS runs,
       count(*) FILTER (WHERE status = 'success') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status IN ('queued', 'running')) AS unfinished,
       min(started_at) AS first_started,
       max(finished_at) AS last_finished,
       avg(extract(epoch FROM finished_at - started_at)) AS mean_seconds
FROM pipeline_runs
GROUP BY 1, 2
"""

VIEW_AFTER = """
CREATE VIEW pipeline_status_nightly AS
SELECT (started_at AT TIME ZONE 'UTC')::date AS night,
       dag_id,
       count(*) AS runs,
       count(*) FILTER (WHERE status = 'success') AS succeeded,
       count(*) FILTER (WHERE status = 'partial') AS partial,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'abandoned') AS abandoned,
       count(*) FILTER (WHERE status IN ('queued', 'running')) AS unfinished,
       min(started_at) AS first_started,
       max(finished_at) AS last_finished,
       avg(extract(epoch FROM finished_at - started_at))
           FILTER (WHERE status IN ('success', 'partial', 'failed')) AS mean_seconds
FROM pipeline_runs
GROUP BY 1, 2
"""


def upgrade() -> None:
    """Widen the run statuses, add heartbeat and owner, count the new statuses in the view."""
    op.drop_constraint(op.f("ck_pipeline_runs_status"), "pipeline_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_pipeline_runs_status"), "pipeline_runs", f"status IN {STATUSES_AFTER}"
    )
    op.add_column("pipeline_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("pipeline_runs", sa.Column("owner", sa.String(length=250), nullable=True))
    op.create_index(
        "ix_pipeline_runs_running",
        "pipeline_runs",
        ["status"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.execute("DROP VIEW pipeline_status_nightly")
    op.execute(VIEW_AFTER)


def downgrade() -> None:
    """Back to four statuses (``partial`` becomes ``success``, ``abandoned`` becomes ``failed``)."""
    op.execute("DROP VIEW pipeline_status_nightly")
    op.execute(VIEW_BEFORE)
    op.drop_index("ix_pipeline_runs_running", table_name="pipeline_runs")
    op.drop_column("pipeline_runs", "owner")
    op.drop_column("pipeline_runs", "heartbeat_at")
    op.drop_constraint(op.f("ck_pipeline_runs_status"), "pipeline_runs", type_="check")
    op.execute("UPDATE pipeline_runs SET status = 'success' WHERE status = 'partial'")
    op.execute("UPDATE pipeline_runs SET status = 'failed' WHERE status = 'abandoned'")
    op.create_check_constraint(
        op.f("ck_pipeline_runs_status"), "pipeline_runs", f"status IN {STATUSES_BEFORE}"
    )
