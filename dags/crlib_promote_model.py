"""Manual, gated promotion of a registered model version to champion."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from crlib_airflow.defaults import DEFAULT_ARGS, TAGS

DOC = """
### crlib promote model
Evaluates the candidate (`challenger` or a version number) and the current champion on the fixed
held-out test set and moves the `champion` alias only if the candidate passes the metrics gate.
The decision and the numbers are recorded in the results database and as MLflow tags.
"""


@dag(
    dag_id="crlib_promote_model",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 0},
    tags=[*TAGS, "training"],
    doc_md=DOC,
    params={
        "model_name": Param(default="deepcr-acs-wfc", type="string", enum=["deepcr-acs-wfc", "deepcr-wfc3-uvis"]),
        "version": Param(default="challenger", type="string", pattern="^(challenger|[0-9]+)$"),
        "dry_run": Param(default=False, type="boolean"),
    },
)
def crlib_promote_model() -> None:
    @task
    def promote(params: dict, **context: object) -> dict:
        from crlib.pipeline.lifecycle import promote_model
        from crlib_airflow.connections import task_settings

        return promote_model(
            task_settings(),
            model_name=params["model_name"],
            version=params["version"],
            dry_run=bool(params["dry_run"]),
            run_id=str(context["run_id"]),
        )

    promote()


crlib_promote_model()
