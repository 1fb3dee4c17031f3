-- CR rate (events per cm^2 per second, exposure-time weighted) by month and filter.
-- Reads the materialised summary; run `crlib stats refresh` (or REFRESH MATERIALIZED VIEW) first.
SELECT date_trunc('month', obs_date)::date AS month,
       filter,
       sum(n_chips) AS n_chips,
       sum(cr_events) AS cr_events,
       round((sum(rate_exptime) / NULLIF(sum(exptime_s), 0))::numeric, 4) AS rate_per_cm2_s
FROM cr_rate_daily
GROUP BY 1, 2
ORDER BY 1, 2;
