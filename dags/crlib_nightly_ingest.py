"""Nightly ingestion: new ACS/WFC visits from the archive to recorded metrics."""

from __future__ import annotations

from airflow.sdk import dag, task

from crlib_airflow.defaults import ARCHIVE_TASK_ARGS, DAG_ARGS, DEFAULT_ARGS, TAGS
from crlib_airflow.stage_tasks import summary_task, wire_stages

DOC = """
### crlib nightly ingestion
Polls the archive (`CRLIB_ARCHIVE` or the `mast` connection) for ACS/WFC visits released since the
watermark, downloads and screens each visit, aligns and drizzles it for ground-truth CR masks, runs the
champion deepCR model on every accepted exposure, scores it, and records everything in the results
database. One bad visit or exposure is recorded with its reason and does not fail the others. The
watermark advances only once the run's visits are recorded, then the statistics summaries are refreshed
(`crlib stats` includes the run). A run that recorded new truth updates the `crlib://results/truth`
asset (extra: `new_truth`, the count), which can trigger retraining; a run without new truth does not.
Files already downloaded and verified against the archive's checksums are not downloaded again.
"""


@dag(
    dag_id="crlib_nightly_ingest",
    schedule="30 3 * * *",
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "ingest"],
    doc_md=DOC,
    **DAG_ARGS,
)
def crlib_nightly_ingest() -> None:
    @task(**ARCHIVE_TASK_ARGS)
    def poll(**context: object) -> list[str]:
        from crlib.pipeline.stages import poll_visits
        from crlib_airflow.connections import task_settings

        return poll_visits(task_settings(), run_id=str(context["run_id"]), dag_id="crlib_nightly_ingest")

    # A retried or repeated run keeps files whose size and md5 match the archive's listing.
    scored = wire_stages(poll(), redo_fetch=False, redo=True)
    summary_task("crlib_nightly_ingest", advance_watermark=True)(scored)


crlib_nightly_ingest()
