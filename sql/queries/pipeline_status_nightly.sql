-- Pipeline runs per night (UTC) and DAG, by status, last 30 nights.
SELECT * FROM pipeline_status_nightly
WHERE night >= current_date - 30
ORDER BY night DESC, dag_id;
