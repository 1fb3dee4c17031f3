-- Per-exposure TPR at fixed FPR (as each exposure was scored), worst first, for the champion model.
SELECT p.rootname, p.filter, p.field_type, p.obs_date, p.tpr_at_fpr_0005, p.tpr_at_fpr_005
FROM exposure_performance p
JOIN current_model_aliases a
  ON a.model_name = p.model_name AND a.version = p.model_version AND a.alias = 'champion'
ORDER BY p.tpr_at_fpr_005 NULLS FIRST
LIMIT 50;
