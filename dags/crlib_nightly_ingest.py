"""Nightly ingestion: new ACS/WFC visits from the archive to recorded metrics."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from crlib_airflow.assets import NEW_TRUTH
from crlib_airflow.defaults import ARCHIVE_TASK_ARGS, DEFAULT_ARGS, INFERENCE_TASK_ARGS, TAGS

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
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "ingest"],
    doc_md=DOC,
)
def crlib_nightly_ingest() -> None:
    @task(**ARCHIVE_TASK_ARGS)
    def poll(**context: object) -> list[str]:
        from crlib.pipeline.stages import poll_visits
        from crlib_airflow.connections import task_settings

        return poll_visits(task_settings(), run_id=str(context["run_id"]), dag_id="crlib_nightly_ingest")

    @task(**ARCHIVE_TASK_ARGS)
    def fetch(visit: str, **context: object) -> str:
        from crlib.pipeline.stages import fetch_visit
        from crlib_airflow.connections import task_settings

        # A retried or repeated run keeps files whose size and md5 match the archive's listing.
        return fetch_visit(task_settings(), run_id=str(context["run_id"]), visit=visit, redo=False)

    @task
    def screen(visit: str, **context: object) -> str:
        from crlib.pipeline.stages import screen_visit
        from crlib_airflow.connections import task_settings

        return screen_visit(task_settings(), run_id=str(context["run_id"]), visit=visit)

    @task
    def truth(visit: str, **context: object) -> str:
        from crlib.pipeline.stages import truth_stage
        from crlib_airflow.connections import task_settings

        return truth_stage(task_settings(), run_id=str(context["run_id"]), visit=visit)

    @task(trigger_rule="all_done")
    def exposures(visits: list[str], **context: object) -> list[str]:
        from crlib.pipeline.stages import list_exposures
        from crlib_airflow.connections import task_settings

        return list_exposures(task_settings(), run_id=str(context["run_id"]), visits=list(visits or []))

    @task(**INFERENCE_TASK_ARGS)
    def infer(rootname: str, **context: object) -> str:
        from crlib.pipeline.stages import infer_exposure
        from crlib_airflow.connections import task_settings

        return infer_exposure(task_settings(), run_id=str(context["run_id"]), rootname=rootname)

    @task
    def score(rootname: str, **context: object) -> str:
        from crlib.pipeline.stages import score_exposure
        from crlib_airflow.connections import task_settings

        return score_exposure(task_settings(), run_id=str(context["run_id"]), rootname=rootname)

    @task(trigger_rule="all_done", outlets=[NEW_TRUTH])
    def summary(scored: list[str], **context: object) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from crlib.pipeline.stages import finish_run
        from crlib_airflow.assets import announce_new_truth
        from crlib_airflow.connections import task_settings

        result = finish_run(
            task_settings(),
            run_id=str(context["run_id"]),
            dag_id="crlib_nightly_ingest",
            advance_watermark=True,
        )
        announce_new_truth(result, context)
        if result["status"] == "failed":  # recorded with its reason; the DAG run must not look green
            raise AirflowFailException(f"run failed: {result['message']}")
        return result

    visits = poll()
    truths = truth.expand(visit=screen.expand(visit=fetch.expand(visit=visits)))
    # TaskFlow passes XComArgs where the task functions declare the values they will receive.
    rootnames = exposures(truths)  # type: ignore[arg-type]
    summary(score.expand(rootname=infer.expand(rootname=rootnames)))  # type: ignore[arg-type]


crlib_nightly_ingest()
