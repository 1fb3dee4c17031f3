"""Periodic retraining on accumulated ground truth, registered as the challenger."""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from crlib_airflow.assets import TRUTH_ASSET
from crlib_airflow.defaults import DAG_ARGS, DEFAULT_ARGS, TAGS

DOC = """
### crlib retrain
Weekly, and whenever new truth is recorded (`crlib://results/truth`): if at least
`CRLIB_RETRAIN_MIN_NEW_EXPOSURES` (default 20) exposures with `ok` truth (>= 100 s) exist that the last
training run did not use (the newest finished run of MLflow experiment `crlib-train-<instrument>`, by its
logged dataset manifest), build the patch dataset, fine-tune from the champion (the registry is
bootstrapped with deepCR's weights if empty), log the run to MLflow and register the result as the
`challenger`. Training settings: `CRLIB_TRAIN_EPOCHS`, `CRLIB_TRAIN_BATCH_SIZE`, `CRLIB_TRAIN_LR`,
`CRLIB_DEVICE`. Promotion is a separate, gated step (`crlib_promote_model`).
"""


@dag(
    dag_id="crlib_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * 0", timezone="UTC"), assets=TRUTH_ASSET
    ),
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "training"],
    doc_md=DOC,
    **DAG_ARGS,
)
def crlib_retrain() -> None:
    @task.short_circuit
    def enough_new_truth() -> bool:
        from crlib.pipeline.lifecycle import enough_new_truth as check
        from crlib_airflow.connections import task_settings

        return check(task_settings())

    @task
    def train(**context: object) -> dict:
        from crlib.pipeline.lifecycle import train_challenger
        from crlib_airflow.connections import task_settings

        return train_challenger(task_settings(), run_id=str(context["run_id"]))

    enough_new_truth() >> train()


crlib_retrain()
