-- Pooled TPR at FPR 0.05% and 0.5% per model version x field type x filter, in SQL alone.
-- model_performance_total holds unseen data (each model version's test split and visits not in
-- its training manifest) scored against truth whose status is ok, one row per scoring rule
-- (border_px, dq_excluded); model_performance_total_by_split has every split and truth status.
-- roc_tpr_at_fpr is the one TPR-at-FPR definition (docs/metrics.md): the same numbers as
-- `crlib stats performance`.
WITH pooled AS (
    SELECT model_version_id, field_type, filter,
           hist_sum(hist_cr) AS hist_cr, hist_sum(hist_noncr) AS hist_noncr
    FROM model_performance_total
    GROUP BY model_version_id, field_type, filter, n_bins
)
SELECT mo.name AS model, v.version, p.field_type, p.filter,
       roc_tpr_at_fpr(p.hist_cr, p.hist_noncr, 0.0005) AS tpr_at_fpr_0005,
       roc_tpr_at_fpr(p.hist_cr, p.hist_noncr, 0.005) AS tpr_at_fpr_005
FROM pooled p
JOIN model_versions v ON v.id = p.model_version_id
JOIN models mo ON mo.id = v.model_id
ORDER BY 1, 2, 3, 4;
