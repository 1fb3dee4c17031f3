"""Statistics views and materialised summaries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Plain views (always current) for scientists:

- ``exposure_cr_rates``: one row per exposure chip with its exposure's attributes;
- ``exposure_performance``: one row per scored exposure with model name/version and attributes;
- ``current_model_aliases``: the latest assignment of every alias;
- ``pipeline_status_nightly``: pipeline runs per night (UTC) and DAG, by status.

Materialised summaries (refreshed by :func:`crlib.db.stats.refresh_summaries`) that keep
statistics over the whole archive at about a second:

- ``cr_rate_daily``: CR sums per observation day x filter x field type x chip x exposure-time bin;
- ``model_performance_monthly``: confusion sums and element-wise summed score histograms per
  model version x month x filter x field type x histogram length;
- ``model_performance_total``: the same over all months (answers undated queries instantly).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

#: Lower edges (seconds) of the exposure-time bins used by the CR-rate summaries.
EXPTIME_BIN_EDGES = "ARRAY[0, 30, 100, 300, 600, 1000, 2000]::float8[]"

HISTOGRAM_AGGREGATES = (
    # Element-wise sum of score histograms: an aggregate over int[] (per-exposure rows) and one over
    # bigint[] (summary rows), both parallel-safe. About 15x faster than unnest + GROUP BY bin.
    """
    CREATE FUNCTION hist_merge(acc bigint[], x bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE
            WHEN acc IS NULL THEN x
            WHEN x IS NULL THEN acc
            ELSE (SELECT array_agg(p + q ORDER BY i) FROM unnest(acc, x) WITH ORDINALITY AS t(p, q, i))
        END
    $$
    """,
    """
    CREATE FUNCTION hist_add(acc bigint[], x integer[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT hist_merge(acc, x::bigint[]) $$
    """,
    "CREATE AGGREGATE hist_sum(integer[]) "
    "(SFUNC = hist_add, STYPE = bigint[], COMBINEFUNC = hist_merge, PARALLEL = SAFE)",
    "CREATE AGGREGATE hist_sum(bigint[]) "
    "(SFUNC = hist_merge, STYPE = bigint[], COMBINEFUNC = hist_merge, PARALLEL = SAFE)",
)

EXPOSURE_CR_RATES = f"""
CREATE VIEW exposure_cr_rates AS
SELECT s.rootname,
       s.chip,
       e.proposal_id,
       e.visit,
       e.filter,
       COALESCE(e.field_type, 'unknown') AS field_type,
       e.obs_date,
       date_trunc('month', e.obs_date)::date AS month,
       e.exptime_s,
       ({EXPTIME_BIN_EDGES})[width_bucket(e.exptime_s, {EXPTIME_BIN_EDGES})] AS exptime_bin_s,
       s.cr_pixels,
       s.cr_events,
       s.rate_per_cm2_s,
       s.rate_per_cm2_s * s.exptime_s AS rate_exptime
FROM cr_statistics s
JOIN exposures e USING (rootname)
"""

CR_RATE_DAILY = """
CREATE MATERIALIZED VIEW cr_rate_daily AS
SELECT obs_date,
       filter,
       field_type,
       chip,
       exptime_bin_s,
       count(*)::bigint AS n_chips,
       sum(cr_pixels)::bigint AS cr_pixels,
       sum(cr_events)::bigint AS cr_events,
       sum(exptime_s) AS exptime_s,
       sum(rate_exptime) AS rate_exptime
FROM exposure_cr_rates
GROUP BY obs_date, filter, field_type, chip, exptime_bin_s
"""

EXPOSURE_PERFORMANCE = """
CREATE VIEW exposure_performance AS
SELECT m.rootname,
       mo.name AS model_name,
       v.version AS model_version,
       m.model_version_id,
       e.proposal_id,
       e.filter,
       COALESCE(m.field_type, e.field_type, 'unknown') AS field_type,
       e.obs_date,
       date_trunc('month', e.obs_date)::date AS month,
       e.exptime_s,
       m.tp, m.fp, m.fn, m.tn,
       (m.tpr_at_fpr ->> '0.0005')::float8 AS tpr_at_fpr_0005,
       (m.tpr_at_fpr ->> '0.005')::float8 AS tpr_at_fpr_005,
       (m.tpr_at_fpr_dilated ->> '0.0005')::float8 AS tpr_dilated_at_fpr_0005,
       (m.tpr_at_fpr_dilated ->> '0.005')::float8 AS tpr_dilated_at_fpr_005,
       cardinality(m.hist_cr) AS n_bins,
       m.hist_cr,
       m.hist_noncr
FROM exposure_metrics m
JOIN exposures e USING (rootname)
JOIN model_versions v ON v.id = m.model_version_id
JOIN models mo ON mo.id = v.model_id
"""

MODEL_PERFORMANCE_MONTHLY = """
CREATE MATERIALIZED VIEW model_performance_monthly AS
SELECT m.model_version_id,
       date_trunc('month', e.obs_date)::date AS month,
       e.filter,
       COALESCE(m.field_type, e.field_type, 'unknown') AS field_type,
       cardinality(m.hist_cr) AS n_bins,
       count(*)::bigint AS n_exposures,
       sum(m.tp)::bigint AS tp, sum(m.fp)::bigint AS fp, sum(m.fn)::bigint AS fn, sum(m.tn)::bigint AS tn,
       hist_sum(m.hist_cr) AS hist_cr,
       hist_sum(m.hist_noncr) AS hist_noncr
FROM exposure_metrics m
JOIN exposures e USING (rootname)
GROUP BY 1, 2, 3, 4, 5
"""

MODEL_PERFORMANCE_TOTAL = """
CREATE MATERIALIZED VIEW model_performance_total AS
SELECT model_version_id, filter, field_type, n_bins,
       sum(n_exposures)::bigint AS n_exposures,
       sum(tp)::bigint AS tp, sum(fp)::bigint AS fp, sum(fn)::bigint AS fn, sum(tn)::bigint AS tn,
       hist_sum(hist_cr) AS hist_cr,
       hist_sum(hist_noncr) AS hist_noncr
FROM model_performance_monthly
GROUP BY 1, 2, 3, 4
"""

CURRENT_MODEL_ALIASES = """
CREATE VIEW current_model_aliases AS
SELECT DISTINCT ON (h.model_id, h.alias)
       mo.name AS model_name, h.alias, v.version, v.source, h.assigned_at, h.reason
FROM model_alias_history h
JOIN models mo ON mo.id = h.model_id
LEFT JOIN model_versions v ON v.id = h.model_version_id
ORDER BY h.model_id, h.alias, h.id DESC
"""

PIPELINE_STATUS_NIGHTLY = """
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


def upgrade() -> None:
    """Create the views, the materialised summaries and their refresh log."""
    op.create_table(
        "summary_refreshes",
        sa.Column("view_name", sa.String(length=64), nullable=False),
        sa.Column(
            "refreshed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("view_name", name=op.f("pk_summary_refreshes")),
    )
    for statement in (
        *HISTOGRAM_AGGREGATES,
        EXPOSURE_CR_RATES,
        CR_RATE_DAILY,
        EXPOSURE_PERFORMANCE,
        MODEL_PERFORMANCE_MONTHLY,
        MODEL_PERFORMANCE_TOTAL,
        CURRENT_MODEL_ALIASES,
        PIPELINE_STATUS_NIGHTLY,
    ):
        op.execute(statement)
    # Unique indexes allow REFRESH MATERIALIZED VIEW CONCURRENTLY (readers never blocked).
    op.execute(
        "CREATE UNIQUE INDEX ux_cr_rate_daily ON cr_rate_daily "
        "(obs_date, filter, field_type, chip, exptime_bin_s) NULLS NOT DISTINCT"
    )
    op.execute(
        "CREATE UNIQUE INDEX ux_model_performance_monthly ON model_performance_monthly "
        "(model_version_id, month, filter, field_type, n_bins)"
    )
    op.execute(
        "CREATE UNIQUE INDEX ux_model_performance_total ON model_performance_total "
        "(model_version_id, filter, field_type, n_bins)"
    )
    op.execute("CREATE INDEX ix_model_performance_monthly_filter ON model_performance_monthly (filter)")


def downgrade() -> None:
    """Drop everything :func:`upgrade` created."""
    op.execute("DROP VIEW IF EXISTS pipeline_status_nightly")
    op.execute("DROP VIEW IF EXISTS current_model_aliases")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS model_performance_total")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS model_performance_monthly")
    op.execute("DROP VIEW IF EXISTS exposure_performance")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS cr_rate_daily")
    op.execute("DROP VIEW IF EXISTS exposure_cr_rates")
    op.execute("DROP AGGREGATE IF EXISTS hist_sum(bigint[])")
    op.execute("DROP AGGREGATE IF EXISTS hist_sum(integer[])")
    op.execute("DROP FUNCTION IF EXISTS hist_add(bigint[], integer[])")
    op.execute("DROP FUNCTION IF EXISTS hist_merge(bigint[], bigint[])")
    op.drop_table("summary_refreshes")
