-- Which screening rules reject most exposures, by filter.
SELECT r.rule, e.filter, count(*) AS exposures
FROM screening_reasons r
JOIN exposures e USING (rootname)
WHERE r.severity = 'reject'
GROUP BY 1, 2
ORDER BY 3 DESC;
