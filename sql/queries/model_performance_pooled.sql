-- Pooled TPR at FPR 0.05% and 0.5% per model version x field type x filter, in SQL alone.
-- The ROC point at bin k calls every pixel in bins >= k a CR (histograms over probability,
-- ascending). The TPR is taken at the first bin edge whose FPR drops to the target (no
-- interpolation; `crlib stats performance` interpolates between edges).
WITH pooled AS (
    SELECT p.model_version_id, p.filter, p.field_type, u.bin, u.cr, u.noncr,
           sum(u.cr) OVER w AS cr_above, sum(u.noncr) OVER w AS noncr_above,
           sum(u.cr) OVER g AS cr_total, sum(u.noncr) OVER g AS noncr_total
    FROM model_performance_total p,
         unnest(p.hist_cr, p.hist_noncr) WITH ORDINALITY AS u(cr, noncr, bin)
    WINDOW g AS (PARTITION BY p.model_version_id, p.filter, p.field_type, p.n_bins),
           w AS (g ORDER BY u.bin DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
roc AS (
    SELECT model_version_id, filter, field_type, bin,
           cr_above::float8 / NULLIF(cr_total, 0) AS tpr,
           noncr_above::float8 / NULLIF(noncr_total, 0) AS fpr
    FROM pooled
)
SELECT mo.name AS model, v.version, r.field_type, r.filter,
       max(r.tpr) FILTER (WHERE r.fpr <= 0.0005) AS tpr_at_fpr_0005,
       max(r.tpr) FILTER (WHERE r.fpr <= 0.005) AS tpr_at_fpr_005
FROM roc r
JOIN model_versions v ON v.id = r.model_version_id
JOIN models mo ON mo.id = v.model_id
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;
