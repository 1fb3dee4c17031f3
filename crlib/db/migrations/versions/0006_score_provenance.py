# ruff: noqa: E501  (generated DDL: long SQL kept on one line where it reads better)
"""Provenance of every score: truth status, split, scoring rules; one TPR-at-FPR definition in SQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Why: performance statistics mixed a model's training exposures with unseen ones, scored suspect
truth without saying so, and could not state the paper's border/DQ rules; the SQL and Python
TPR-at-FPR rules disagreed where ROC points share an FPR.

- ``exposure_metrics`` records what each score rests on: ``truth_status`` (``ok``/``suspect``,
  ``unknown`` when no truth was recorded), ``truth_method``, ``truth_reasons`` (the gate's
  reasons), ``split`` (``train``/``validation``/``test`` of the exposure's visit in the predicting
  model version's training manifest, else ``unseen``), ``border_px`` and ``dq_excluded`` (the
  scoring rules). Backfill: truth status, method and reasons from ``truth_results`` (the drizzle
  truth first; ``unknown`` where there is none with status ok/suspect), split ``unseen`` (no
  manifest is recorded yet), border 0 and no DQ exclusion (what scoring applied until now).
- ``model_version_splits`` (model version, visit, split): the training manifest of each model
  version, recorded at registration; ``model_versions.training_dataset`` names its dataset
  (``external`` for weights crlib did not train, NULL when not recorded).
- ``performance_monthly`` / ``performance_total`` gain ``split``, ``truth_status``, ``border_px`` and
  ``dq_excluded`` as key columns; they are rebuilt empty and every cell with metrics is logged
  as changed, so queries answer from the recorded rows until the first refresh.
- Views: ``model_performance_monthly`` / ``model_performance_total`` now pool only unseen data
  (splits ``test`` and ``unseen``) on ``ok`` truth, per scoring rules (``border_px``,
  ``dq_excluded`` columns), as ``crlib stats performance`` does by default;
  ``model_performance_monthly_by_split`` / ``model_performance_total_by_split`` show every split
  and truth status; ``exposure_performance`` carries the provenance columns.
- ``roc_tpr_at_fpr(hist_cr bigint[], hist_noncr bigint[], fpr float8)``: the TPR at a fixed FPR
  by the one definition of :mod:`crlib.metrics.roc` (same IEEE double operations on the same
  integer sums: identical to ``crlib.metrics.roc.tpr_at_fpr_from_histograms``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

HIST_COLUMNS = ("hist_cr", "hist_noncr", "hist_cr_dilated", "hist_noncr_dilated")
NEW_KEYS = ("split", "truth_status", "border_px", "dq_excluded")
UNSEEN = "split IN ('test', 'unseen') AND truth_status = 'ok'"

TPR_FUNCTION = """
CREATE FUNCTION roc_tpr_at_fpr(hist_cr bigint[], hist_noncr bigint[], target float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- Point k calls every pixel in bins >= k a CR; TPR/FPR = float8(count above) / float8(total).
    WITH bins AS (
        SELECT u.i, u.cr, u.noncr FROM unnest(hist_cr, hist_noncr) WITH ORDINALITY AS u(cr, noncr, i)
    ),
    tails AS (
        SELECT sum(cr) OVER w AS cr_above, sum(noncr) OVER w AS noncr_above,
               sum(cr) OVER () AS n_cr, sum(noncr) OVER () AS n_noncr
        FROM bins
        WINDOW w AS (ORDER BY i DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    ),
    points AS (
        SELECT noncr_above::float8 / n_noncr::float8 AS fpr, cr_above::float8 / n_cr::float8 AS tpr
        FROM tails WHERE n_cr > 0 AND n_noncr > 0
        UNION ALL SELECT 0::float8, 0::float8
    ),
    ends AS (
        SELECT max(fpr) FILTER (WHERE fpr <= target) AS fpr_a, max(tpr) FILTER (WHERE fpr <= target) AS tpr_a,
               min(fpr) FILTER (WHERE fpr > target) AS fpr_b, min(tpr) FILTER (WHERE fpr > target) AS tpr_b,
               count(*) AS n_points
        FROM points
    )
    SELECT CASE
        WHEN n_points < 2 OR NOT (target >= 0 AND target <= 1)
             OR cardinality(hist_cr) <> cardinality(hist_noncr) THEN NULL
        WHEN fpr_b IS NULL THEN tpr_a
        ELSE tpr_a + (tpr_b - tpr_a) * (target - fpr_a) / (fpr_b - fpr_a)
    END
    FROM ends
$$
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
       m.n_bins::integer AS n_bins,
       hist_decode(m.hist_cr, m.n_bins) AS hist_cr,
       hist_decode(m.hist_noncr, m.n_bins) AS hist_noncr,
       hist_decode(m.hist_cr_dilated, m.n_bins) AS hist_cr_dilated,
       hist_decode(m.hist_noncr_dilated, m.n_bins) AS hist_noncr_dilated{extra}
FROM exposure_metrics m
JOIN exposures e USING (rootname)
JOIN model_versions v ON v.id = m.model_version_id
JOIN models mo ON mo.id = v.model_id
"""
PROVENANCE_COLUMNS = """,
       m.split,
       m.truth_status,
       m.truth_method,
       m.truth_reasons,
       m.border_px::integer AS border_px,
       m.dq_excluded"""

_SUMS = "n_exposures, tp, fp, fn, tn"


def unseen_view(name: str, table: str, keys: str) -> str:
    """Unseen data (splits test + unseen) on ``ok`` truth, pooled per scoring rules, decoded."""
    return f"""
CREATE VIEW {name} AS
SELECT {keys}, n_bins::integer AS n_bins,
       sum(n_exposures)::bigint AS n_exposures, sum(tp)::bigint AS tp, sum(fp)::bigint AS fp,
       sum(fn)::bigint AS fn, sum(tn)::bigint AS tn,
       hist_sum(hist_decode(hist_cr, n_bins)) AS hist_cr,
       hist_sum(hist_decode(hist_noncr, n_bins)) AS hist_noncr,
       sum(n_dilated)::bigint AS n_dilated,
       hist_sum(hist_decode(hist_cr_dilated, n_bins)) AS hist_cr_dilated,
       hist_sum(hist_decode(hist_noncr_dilated, n_bins)) AS hist_noncr_dilated,
       border_px::integer AS border_px, dq_excluded
FROM {table}
WHERE {UNSEEN}
GROUP BY {keys}, n_bins, border_px, dq_excluded
"""


def split_view(name: str, table: str, keys: str) -> str:
    """Every row of a performance summary (all splits and truth statuses), histograms decoded."""
    return f"""
CREATE VIEW {name} AS
SELECT {keys}, split, truth_status, border_px::integer AS border_px, dq_excluded,
       n_bins::integer AS n_bins, {_SUMS},
       hist_decode(hist_cr, n_bins) AS hist_cr,
       hist_decode(hist_noncr, n_bins) AS hist_noncr,
       n_dilated,
       hist_decode(hist_cr_dilated, n_bins) AS hist_cr_dilated,
       hist_decode(hist_noncr_dilated, n_bins) AS hist_noncr_dilated
FROM {table}
"""


def old_summary_view(name: str, table: str, keys: str) -> str:
    """The 0004 view of a performance summary (for the downgrade)."""
    return f"""
CREATE VIEW {name} AS
SELECT {keys}, n_bins::integer AS n_bins, {_SUMS},
       hist_decode(hist_cr, n_bins) AS hist_cr,
       hist_decode(hist_noncr, n_bins) AS hist_noncr,
       n_dilated,
       hist_decode(hist_cr_dilated, n_bins) AS hist_cr_dilated,
       hist_decode(hist_noncr_dilated, n_bins) AS hist_noncr_dilated
FROM {table}
"""


MONTHLY_KEYS = "model_version_id, month, filter, field_type"
TOTAL_KEYS = "model_version_id, filter, field_type"


def _create_performance_table(name: str, *, monthly: bool, provenance: bool) -> None:
    columns: list[sa.Column[Any]] = [sa.Column("model_version_id", sa.Integer(), nullable=False)]
    if monthly:
        columns.append(sa.Column("month", sa.Date(), nullable=False))
    columns += [
        sa.Column("filter", sa.String(length=16), nullable=False),
        sa.Column("field_type", sa.String(length=32), nullable=False),
        sa.Column("n_bins", sa.SmallInteger(), nullable=False),
    ]
    if provenance:
        columns += [
            sa.Column("split", sa.String(length=10), nullable=False),
            sa.Column("truth_status", sa.String(length=8), nullable=False),
            sa.Column("border_px", sa.SmallInteger(), nullable=False),
            sa.Column("dq_excluded", sa.Boolean(), nullable=False),
        ]
    columns += [
        sa.Column("n_exposures", sa.BigInteger(), nullable=False),
        sa.Column("n_dilated", sa.BigInteger(), nullable=False),
        sa.Column("tp", sa.BigInteger(), nullable=False),
        sa.Column("fp", sa.BigInteger(), nullable=False),
        sa.Column("fn", sa.BigInteger(), nullable=False),
        sa.Column("tn", sa.BigInteger(), nullable=False),
        sa.Column("hist_cr", sa.LargeBinary(), nullable=False),
        sa.Column("hist_noncr", sa.LargeBinary(), nullable=False),
        sa.Column("hist_cr_dilated", sa.LargeBinary(), nullable=True),
        sa.Column("hist_noncr_dilated", sa.LargeBinary(), nullable=True),
    ]
    keys = ["model_version_id", *(["month"] if monthly else []), "filter", "field_type", "n_bins"]
    keys += list(NEW_KEYS) if provenance else []
    op.create_table(
        name,
        *columns,
        sa.CheckConstraint("n_exposures > 0", name=op.f(f"ck_{name}_n_exposures")),
        sa.CheckConstraint("n_dilated >= 0 AND n_dilated <= n_exposures", name=op.f(f"ck_{name}_n_dilated")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f(f"fk_{name}_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*keys, name=op.f(f"pk_{name}")),
    )
    for column in HIST_COLUMNS:
        op.execute(f"ALTER TABLE {name} ALTER COLUMN {column} SET STORAGE EXTERNAL")
    if monthly:
        op.create_index("ix_performance_monthly_month_filter", name, ["month", "filter"])


def _rebuild_summaries(*, provenance: bool) -> None:
    """Replace the performance summaries (empty) and log every cell with metrics as changed."""
    op.drop_table("performance_total")
    op.drop_table("performance_monthly")
    _create_performance_table("performance_monthly", monthly=True, provenance=provenance)
    _create_performance_table("performance_total", monthly=False, provenance=provenance)
    op.execute(
        "DELETE FROM summary_refreshes WHERE view_name IN ('performance_monthly', 'performance_total')"
    )
    op.execute(
        "INSERT INTO summary_changes (month, filter) "
        "SELECT DISTINCT date_trunc('month', obs_date)::date, filter FROM exposures e "
        "WHERE EXISTS (SELECT 1 FROM exposure_metrics m WHERE m.rootname = e.rootname)"
    )


def _drop_views() -> None:
    for view in (
        "model_performance_monthly_by_split",
        "model_performance_total_by_split",
        "model_performance_monthly",
        "model_performance_total",
        "exposure_performance",
    ):
        op.execute(f"DROP VIEW IF EXISTS {view}")


def upgrade() -> None:
    """Provenance columns and backfill, training splits, summaries keyed by provenance, views."""
    op.execute(TPR_FUNCTION)
    _drop_views()

    op.add_column("model_versions", sa.Column("training_dataset", sa.String(length=128), nullable=True))
    op.create_table(
        "model_version_splits",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("visit", sa.String(length=6), nullable=False),
        sa.Column("split", sa.String(length=10), nullable=False),
        sa.CheckConstraint(
            "split IN ('train', 'validation', 'test')", name=op.f("ck_model_version_splits_split")
        ),
        sa.CheckConstraint("visit ~ '^[a-z0-9]{6}$'", name=op.f("ck_model_version_splits_visit")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_version_splits_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_version_id", "visit", name=op.f("pk_model_version_splits")),
    )

    op.add_column(
        "exposure_metrics",
        sa.Column("truth_status", sa.String(length=8), server_default="unknown", nullable=False),
    )
    op.add_column("exposure_metrics", sa.Column("truth_method", sa.String(length=16), nullable=True))
    op.add_column(
        "exposure_metrics",
        sa.Column("truth_reasons", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
    )
    op.add_column(
        "exposure_metrics", sa.Column("split", sa.String(length=10), server_default="unseen", nullable=False)
    )
    op.add_column(
        "exposure_metrics", sa.Column("border_px", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "exposure_metrics", sa.Column("dq_excluded", sa.Boolean(), server_default="false", nullable=False)
    )
    # Backfill the truth each row rests on, without the change-log trigger (every cell is logged below;
    # the trigger's transition tables would copy every row).
    op.execute("ALTER TABLE exposure_metrics DISABLE TRIGGER summary_mark_exposure_metrics_update")
    op.execute(
        "UPDATE exposure_metrics m SET truth_status = t.status, truth_method = t.method, truth_reasons = t.reasons "
        "FROM (SELECT DISTINCT ON (rootname) rootname, method, status, reasons FROM truth_results "
        "      WHERE status IN ('ok', 'suspect') ORDER BY rootname, (method <> 'drizzle'), method) AS t "
        "WHERE t.rootname = m.rootname"
    )
    op.execute("ALTER TABLE exposure_metrics ENABLE TRIGGER summary_mark_exposure_metrics_update")
    op.create_check_constraint(
        op.f("ck_exposure_metrics_truth_status"),
        "exposure_metrics",
        "truth_status IN ('ok', 'suspect', 'unknown')",
    )
    op.create_check_constraint(
        op.f("ck_exposure_metrics_truth_method"),
        "exposure_metrics",
        "truth_method IN ('drizzle', 'multiframe')",
    )
    op.create_check_constraint(
        op.f("ck_exposure_metrics_split"),
        "exposure_metrics",
        "split IN ('train', 'validation', 'test', 'unseen')",
    )
    op.create_check_constraint(op.f("ck_exposure_metrics_border_px"), "exposure_metrics", "border_px >= 0")

    _rebuild_summaries(provenance=True)
    op.execute(EXPOSURE_PERFORMANCE.format(extra=PROVENANCE_COLUMNS))
    op.execute(unseen_view("model_performance_monthly", "performance_monthly", MONTHLY_KEYS))
    op.execute(unseen_view("model_performance_total", "performance_total", TOTAL_KEYS))
    op.execute(split_view("model_performance_monthly_by_split", "performance_monthly", MONTHLY_KEYS))
    op.execute(split_view("model_performance_total_by_split", "performance_total", TOTAL_KEYS))


def downgrade() -> None:
    """Back to 0005: provenance dropped, summaries and views as 0004 made them (cells logged)."""
    _drop_views()
    _rebuild_summaries(provenance=False)
    for name in ("truth_status", "truth_method", "split", "border_px"):
        op.drop_constraint(op.f(f"ck_exposure_metrics_{name}"), "exposure_metrics", type_="check")
    for name in ("dq_excluded", "border_px", "split", "truth_reasons", "truth_method", "truth_status"):
        op.drop_column("exposure_metrics", name)
    op.drop_table("model_version_splits")
    op.drop_column("model_versions", "training_dataset")
    op.execute(EXPOSURE_PERFORMANCE.format(extra=""))
    op.execute(old_summary_view("model_performance_monthly", "performance_monthly", MONTHLY_KEYS))
    op.execute(old_summary_view("model_performance_total", "performance_total", TOTAL_KEYS))
    op.execute("DROP FUNCTION IF EXISTS roc_tpr_at_fpr(bigint[], bigint[], float8)")
