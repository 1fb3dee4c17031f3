-- Always-current per-chip CR statistics of one proposal (base view, uses the proposal index).
SELECT rootname, chip, filter, obs_date, exptime_s, cr_events, rate_per_cm2_s
FROM exposure_cr_rates
WHERE proposal_id = 10775
ORDER BY obs_date, rootname, chip;
