# ruff: noqa: E501  (generated DDL: long SQL kept on one line where it reads better)
"""Compact histogram columns, dilated histograms, incrementally refreshed summary tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Why: bulk recording of metrics was capped near a thousand rows per second by ``integer[]``
histograms (COPY parses every element, pglz compresses every row), and refreshing the
materialised summaries recomputed the whole archive (about 40 minutes for a million exposures).

- ``exposure_metrics``: ``hist_cr``/``hist_noncr`` become ``bytea`` in the fixed-width encoding of
  :mod:`crlib.db.histcodec` (converted in place by ``hist_encode``), a ``n_bins`` column says how
  many bins they hold, and the 3x3-dilated histograms ``hist_cr_dilated``/``hist_noncr_dilated``
  are added (NULL when not measured). Histogram columns use ``STORAGE EXTERNAL`` (the bytes do
  not compress enough to pay for pglz).
- SQL functions ``hist_encode(bigint[]) -> bytea`` and ``hist_decode(bytea, n_bins) -> bigint[]``.
- The materialised views ``cr_rate_daily``, ``model_performance_monthly`` and
  ``model_performance_total`` are replaced by tables the application refreshes per
  (month x filter) cell: ``cr_rate_daily`` (same columns), ``performance_monthly`` and
  ``performance_total`` (summed histograms in the same encoding). ``model_performance_monthly`` and
  ``model_performance_total`` stay as views over them with the histograms decoded to ``bigint[]``,
  so SQL written against the old summaries keeps working.
- ``summary_changes``: a log of (month, filter) cells whose summaries are out of date. Statement
  triggers fill it when ``cr_statistics`` rows are written, ``exposure_metrics`` rows are updated
  or deleted, and exposures change date, filter, field type or exposure time or are deleted;
  ``crlib.db.metric_store.record_metrics`` logs the cells of the metrics it inserts itself (a
  trigger's transition table would copy every inserted row with its histograms).
  ``crlib.db.summaries.refresh_summaries`` recomputes only the logged cells; statistics queries
  compute logged cells from the live rows, so answers are current before a refresh.
- ``exposure_performance`` is re-created with the histograms decoded (and the dilated ones).

Every cell that has data is logged at upgrade, so the first refresh fills the new summaries.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

HIST_COLUMNS = ("hist_cr", "hist_noncr", "hist_cr_dilated", "hist_noncr_dilated")
FIELD_TYPES = "('globular_cluster', 'extragalactic', 'resolved_galaxy')"
EXPTIME_BIN_EDGES = "ARRAY[0, 30, 100, 300, 600, 1000, 2000]::float8[]"


def encoded_check(column: str) -> str:
    """CHECK: ``column`` is a fixed-width encoded histogram of ``n_bins`` bins (NULL passes)."""
    return (
        f"CASE WHEN length({column}) < 2 THEN false ELSE get_byte({column}, 0) IN (0, 1, 2, 3, 4, 8) "
        f"AND length({column}) = 2 + 10 * get_byte({column}, 1) + n_bins * get_byte({column}, 0) END"
    )


FUNCTIONS = (
    # A valid encoding in the format of crlib.db.histcodec (width from the largest count, no
    # exceptions); the Python encoder may choose a smaller width with exceptions.
    r"""
    CREATE FUNCTION hist_encode(counts bigint[]) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
        SELECT CASE
            WHEN w.low < 0 THEN NULL
            WHEN w.width = 0 THEN '\x0000'::bytea
            ELSE set_byte('\x0000'::bytea, 0, w.width)
                 || (SELECT string_agg(substring(int8send(u.c) FROM 9 - w.width), ''::bytea ORDER BY u.i)
                     FROM unnest(counts) WITH ORDINALITY AS u(c, i))
        END
        FROM (SELECT m.low,
                     CASE WHEN m.peak IS NULL OR m.peak < 1 THEN 0 WHEN m.peak < 256 THEN 1
                          WHEN m.peak < 65536 THEN 2 WHEN m.peak < 4294967296 THEN 4 ELSE 8 END AS width
              FROM (SELECT max(c) AS peak, min(c) AS low FROM unnest(counts) AS c) AS m) AS w
    $$
    """,
    r"""
    CREATE FUNCTION hist_decode(data bytea, n_bins integer) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
        WITH head AS (SELECT get_byte(data, 0) AS w, get_byte(data, 1) AS k),
        exceptions AS (
            SELECT ('x' || encode(substring(data FROM 3 + 10 * j FOR 2), 'hex'))::bit(16)::integer AS bin,
                   ('x' || encode(substring(data FROM 5 + 10 * j FOR 8), 'hex'))::bit(64)::bigint AS count
            FROM head, generate_series(0, head.k - 1) AS j
        )
        SELECT array_agg(
                   COALESCE(x.count,
                            CASE WHEN head.w = 0 THEN 0::bigint
                                 ELSE ('x' || lpad(encode(substring(data FROM 3 + 10 * head.k + i * head.w
                                                                    FOR head.w), 'hex'), 16, '0'))::bit(64)::bigint
                            END)
                   ORDER BY i)
        FROM head CROSS JOIN generate_series(0, n_bins - 1) AS i
        LEFT JOIN exceptions AS x ON x.bin = i
    $$
    """,
)

MARK_FUNCTIONS = (
    # Rows of cr_statistics / exposure_metrics: the cells of their exposures.
    """
    CREATE FUNCTION summary_mark_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO summary_changes (month, filter)
            SELECT DISTINCT date_trunc('month', e.obs_date)::date, e.filter
            FROM new_rows AS n JOIN exposures AS e ON e.rootname = n.rootname;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            INSERT INTO summary_changes (month, filter)
            SELECT DISTINCT date_trunc('month', e.obs_date)::date, e.filter
            FROM old_rows AS o JOIN exposures AS e ON e.rootname = o.rootname;
        END IF;
        RETURN NULL;
    END $$
    """,
    # Exposures: old and new cells when an attribute the summaries group by changes; deleted ones.
    """
    CREATE FUNCTION summary_mark_exposures() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            INSERT INTO summary_changes (month, filter)
            SELECT DISTINCT cell.month, cell.filter
            FROM old_rows AS o
            JOIN new_rows AS n ON n.rootname = o.rootname
            CROSS JOIN LATERAL (VALUES (date_trunc('month', o.obs_date)::date, o.filter),
                                       (date_trunc('month', n.obs_date)::date, n.filter)) AS cell(month, filter)
            WHERE (o.obs_date, o.filter, o.field_type, o.exptime_s)
                  IS DISTINCT FROM (n.obs_date, n.filter, n.field_type, n.exptime_s);
        ELSE
            INSERT INTO summary_changes (month, filter)
            SELECT DISTINCT date_trunc('month', obs_date)::date, filter FROM old_rows;
        END IF;
        RETURN NULL;
    END $$
    """,
)

TRIGGERS = (
    ("cr_statistics", "INSERT", "REFERENCING NEW TABLE AS new_rows", "summary_mark_rows"),
    (
        "cr_statistics",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "summary_mark_rows",
    ),
    ("cr_statistics", "DELETE", "REFERENCING OLD TABLE AS old_rows", "summary_mark_rows"),
    (
        "exposure_metrics",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "summary_mark_rows",
    ),
    ("exposure_metrics", "DELETE", "REFERENCING OLD TABLE AS old_rows", "summary_mark_rows"),
    (
        "exposures",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "summary_mark_exposures",
    ),
    ("exposures", "DELETE", "REFERENCING OLD TABLE AS old_rows", "summary_mark_exposures"),
)

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
       hist_decode(m.hist_noncr_dilated, m.n_bins) AS hist_noncr_dilated
FROM exposure_metrics m
JOIN exposures e USING (rootname)
JOIN model_versions v ON v.id = m.model_version_id
JOIN models mo ON mo.id = v.model_id
"""


def summary_view(name: str, table: str, keys: str) -> str:
    """A view of a performance summary table with its histograms decoded to ``bigint[]``."""
    return f"""
CREATE VIEW {name} AS
SELECT {keys}, n_bins::integer AS n_bins, n_exposures, tp, fp, fn, tn,
       hist_decode(hist_cr, n_bins) AS hist_cr,
       hist_decode(hist_noncr, n_bins) AS hist_noncr,
       n_dilated,
       hist_decode(hist_cr_dilated, n_bins) AS hist_cr_dilated,
       hist_decode(hist_noncr_dilated, n_bins) AS hist_noncr_dilated
FROM {table}
"""


def _performance_columns(*, monthly: bool) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [sa.Column("model_version_id", sa.Integer(), nullable=False)]
    if monthly:
        columns.append(sa.Column("month", sa.Date(), nullable=False))
    columns += [
        sa.Column("filter", sa.String(length=16), nullable=False),
        sa.Column("field_type", sa.String(length=32), nullable=False),
        sa.Column("n_bins", sa.SmallInteger(), nullable=False),
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
    return columns


def _create_performance_table(name: str, *, monthly: bool) -> None:
    keys = ["model_version_id", *(["month"] if monthly else []), "filter", "field_type", "n_bins"]
    op.create_table(
        name,
        *_performance_columns(monthly=monthly),
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


def upgrade() -> None:
    """Convert the histogram columns, replace the summaries, install the change log and triggers."""
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute("DROP VIEW exposure_performance")
    op.execute("DROP MATERIALIZED VIEW model_performance_total")
    op.execute("DROP MATERIALIZED VIEW model_performance_monthly")
    op.execute("DROP MATERIALIZED VIEW cr_rate_daily")
    op.execute("DELETE FROM summary_refreshes")

    # ------------------------------------------------------------------ exposure_metrics
    op.drop_constraint(op.f("ck_exposure_metrics_hist_cr"), "exposure_metrics", type_="check")
    op.drop_constraint(op.f("ck_exposure_metrics_hist_noncr"), "exposure_metrics", type_="check")
    op.add_column("exposure_metrics", sa.Column("n_bins", sa.SmallInteger(), nullable=True))
    op.execute("UPDATE exposure_metrics SET n_bins = cardinality(hist_cr)")
    op.alter_column("exposure_metrics", "n_bins", nullable=False)
    for column in ("hist_cr", "hist_noncr"):
        op.execute(
            f"ALTER TABLE exposure_metrics ALTER COLUMN {column} TYPE bytea USING hist_encode({column}::bigint[])"
        )
    op.add_column("exposure_metrics", sa.Column("hist_cr_dilated", sa.LargeBinary(), nullable=True))
    op.add_column("exposure_metrics", sa.Column("hist_noncr_dilated", sa.LargeBinary(), nullable=True))
    for column in HIST_COLUMNS:
        op.execute(f"ALTER TABLE exposure_metrics ALTER COLUMN {column} SET STORAGE EXTERNAL")
    op.create_check_constraint(op.f("ck_exposure_metrics_n_bins"), "exposure_metrics", "n_bins >= 1")
    op.create_check_constraint(
        op.f("ck_exposure_metrics_hist_cr"), "exposure_metrics", encoded_check("hist_cr")
    )
    op.create_check_constraint(
        op.f("ck_exposure_metrics_hist_noncr"), "exposure_metrics", encoded_check("hist_noncr")
    )
    op.create_check_constraint(
        op.f("ck_exposure_metrics_hist_cr_dilated"), "exposure_metrics", encoded_check("hist_cr_dilated")
    )
    op.create_check_constraint(
        op.f("ck_exposure_metrics_hist_noncr_dilated"),
        "exposure_metrics",
        "(hist_cr_dilated IS NULL) = (hist_noncr_dilated IS NULL) AND " + encoded_check("hist_noncr_dilated"),
    )

    # ------------------------------------------------------------------ summaries
    op.create_table(
        "cr_rate_daily",
        sa.Column("obs_date", sa.Date(), nullable=False),
        sa.Column("filter", sa.String(length=16), nullable=False),
        sa.Column("field_type", sa.String(length=32), nullable=False),
        sa.Column("chip", sa.Integer(), nullable=False),
        sa.Column("exptime_bin_s", sa.Float(), nullable=False),
        sa.Column("n_chips", sa.BigInteger(), nullable=False),
        sa.Column("cr_pixels", sa.BigInteger(), nullable=False),
        sa.Column("cr_events", sa.BigInteger(), nullable=False),
        sa.Column("exptime_s", sa.Float(), nullable=False),
        sa.Column("rate_exptime", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "obs_date", "filter", "field_type", "chip", "exptime_bin_s", name=op.f("pk_cr_rate_daily")
        ),
    )
    _create_performance_table("performance_monthly", monthly=True)
    _create_performance_table("performance_total", monthly=False)
    op.create_index("ix_performance_monthly_month_filter", "performance_monthly", ["month", "filter"])
    op.create_table(
        "summary_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("filter", sa.String(length=16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_summary_changes")),
    )
    op.create_index("ix_summary_changes_month_filter", "summary_changes", ["month", "filter"])

    op.execute(EXPOSURE_PERFORMANCE)
    op.execute(
        summary_view(
            "model_performance_monthly", "performance_monthly", "model_version_id, month, filter, field_type"
        )
    )
    op.execute(
        summary_view("model_performance_total", "performance_total", "model_version_id, filter, field_type")
    )

    for statement in MARK_FUNCTIONS:
        op.execute(statement)
    for table, event, referencing, function in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER summary_mark_{table}_{event.lower()} AFTER {event} ON {table} "
            f"{referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    # Every cell with data is out of date until the first refresh (queries compute it live).
    op.execute(
        "INSERT INTO summary_changes (month, filter) "
        "SELECT DISTINCT date_trunc('month', obs_date)::date, filter FROM exposures e "
        "WHERE EXISTS (SELECT 1 FROM cr_statistics s WHERE s.rootname = e.rootname) "
        "OR EXISTS (SELECT 1 FROM exposure_metrics m WHERE m.rootname = e.rootname)"
    )


# ---------------------------------------------------------------------- downgrade (frozen 0002 DDL)
OLD_EXPOSURE_PERFORMANCE = """
CREATE VIEW exposure_performance AS
SELECT m.rootname, mo.name AS model_name, v.version AS model_version, m.model_version_id, e.proposal_id,
       e.filter, COALESCE(m.field_type, e.field_type, 'unknown') AS field_type, e.obs_date,
       date_trunc('month', e.obs_date)::date AS month, e.exptime_s, m.tp, m.fp, m.fn, m.tn,
       (m.tpr_at_fpr ->> '0.0005')::float8 AS tpr_at_fpr_0005,
       (m.tpr_at_fpr ->> '0.005')::float8 AS tpr_at_fpr_005,
       (m.tpr_at_fpr_dilated ->> '0.0005')::float8 AS tpr_dilated_at_fpr_0005,
       (m.tpr_at_fpr_dilated ->> '0.005')::float8 AS tpr_dilated_at_fpr_005,
       cardinality(m.hist_cr) AS n_bins, m.hist_cr, m.hist_noncr
FROM exposure_metrics m JOIN exposures e USING (rootname)
JOIN model_versions v ON v.id = m.model_version_id JOIN models mo ON mo.id = v.model_id
"""

OLD_SUMMARIES = (
    "CREATE MATERIALIZED VIEW cr_rate_daily AS SELECT obs_date, filter, field_type, chip, exptime_bin_s, "
    "count(*)::bigint AS n_chips, sum(cr_pixels)::bigint AS cr_pixels, sum(cr_events)::bigint AS cr_events, "
    "sum(exptime_s) AS exptime_s, sum(rate_exptime) AS rate_exptime FROM exposure_cr_rates "
    "GROUP BY obs_date, filter, field_type, chip, exptime_bin_s",
    "CREATE MATERIALIZED VIEW model_performance_monthly AS SELECT m.model_version_id, "
    "date_trunc('month', e.obs_date)::date AS month, e.filter, "
    "COALESCE(m.field_type, e.field_type, 'unknown') AS field_type, cardinality(m.hist_cr) AS n_bins, "
    "count(*)::bigint AS n_exposures, sum(m.tp)::bigint AS tp, sum(m.fp)::bigint AS fp, "
    "sum(m.fn)::bigint AS fn, sum(m.tn)::bigint AS tn, hist_sum(m.hist_cr) AS hist_cr, "
    "hist_sum(m.hist_noncr) AS hist_noncr FROM exposure_metrics m JOIN exposures e USING (rootname) "
    "GROUP BY 1, 2, 3, 4, 5",
    "CREATE MATERIALIZED VIEW model_performance_total AS SELECT model_version_id, filter, field_type, n_bins, "
    "sum(n_exposures)::bigint AS n_exposures, sum(tp)::bigint AS tp, sum(fp)::bigint AS fp, "
    "sum(fn)::bigint AS fn, sum(tn)::bigint AS tn, hist_sum(hist_cr) AS hist_cr, "
    "hist_sum(hist_noncr) AS hist_noncr FROM model_performance_monthly GROUP BY 1, 2, 3, 4",
    "CREATE UNIQUE INDEX ux_cr_rate_daily ON cr_rate_daily "
    "(obs_date, filter, field_type, chip, exptime_bin_s) NULLS NOT DISTINCT",
    "CREATE UNIQUE INDEX ux_model_performance_monthly ON model_performance_monthly "
    "(model_version_id, month, filter, field_type, n_bins)",
    "CREATE UNIQUE INDEX ux_model_performance_total ON model_performance_total "
    "(model_version_id, filter, field_type, n_bins)",
    "CREATE INDEX ix_model_performance_monthly_filter ON model_performance_monthly (filter)",
)


def downgrade() -> None:
    """Back to 0003: ``integer[]`` histograms (dilated ones dropped) and the materialised views."""
    for table, event, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS summary_mark_{table}_{event.lower()} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS summary_mark_rows()")
    op.execute("DROP FUNCTION IF EXISTS summary_mark_exposures()")
    op.execute("DROP VIEW IF EXISTS model_performance_total")
    op.execute("DROP VIEW IF EXISTS model_performance_monthly")
    op.execute("DROP VIEW IF EXISTS exposure_performance")
    op.drop_table("summary_changes")
    op.drop_table("performance_total")
    op.drop_table("performance_monthly")
    op.drop_table("cr_rate_daily")
    op.execute("DELETE FROM summary_refreshes")
    for name in ("n_bins", *HIST_COLUMNS):
        op.drop_constraint(op.f(f"ck_exposure_metrics_{name}"), "exposure_metrics", type_="check")
    op.drop_column("exposure_metrics", "hist_cr_dilated")
    op.drop_column("exposure_metrics", "hist_noncr_dilated")
    for column in ("hist_cr", "hist_noncr"):
        op.execute(
            f"ALTER TABLE exposure_metrics ALTER COLUMN {column} TYPE integer[] "
            f"USING hist_decode({column}, n_bins)::integer[]"
        )
        op.execute(f"ALTER TABLE exposure_metrics ALTER COLUMN {column} SET STORAGE EXTENDED")
    op.drop_column("exposure_metrics", "n_bins")
    op.create_check_constraint(
        op.f("ck_exposure_metrics_hist_cr"),
        "exposure_metrics",
        "cardinality(hist_cr) > 0 AND 0 <= ALL(hist_cr)",
    )
    op.create_check_constraint(
        op.f("ck_exposure_metrics_hist_noncr"),
        "exposure_metrics",
        "cardinality(hist_noncr) = cardinality(hist_cr) AND 0 <= ALL(hist_noncr)",
    )
    op.execute("DROP FUNCTION IF EXISTS hist_decode(bytea, integer)")
    op.execute("DROP FUNCTION IF EXISTS hist_encode(bigint[])")
    op.execute(OLD_EXPOSURE_PERFORMANCE)
    for statement in OLD_SUMMARIES:
        op.execute(statement)
