-- CR rate by chip and exposure-time bin (lower edge in seconds), for one field type.
SELECT chip,
       exptime_bin_s,
       sum(n_chips) AS n_chips,
       round((sum(cr_events)::numeric / sum(n_chips)), 1) AS events_per_chip,
       round((sum(rate_exptime) / NULLIF(sum(exptime_s), 0))::numeric, 4) AS rate_per_cm2_s
FROM cr_rate_daily
WHERE field_type = 'extragalactic'
GROUP BY 1, 2
ORDER BY 1, 2;
