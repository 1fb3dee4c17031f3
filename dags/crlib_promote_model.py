"""Manual, gated promotion of a registered model version to champion."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task

from crlib_airflow.defaults import DAG_ARGS, DEFAULT_ARGS, TAGS

DOC = """
### crlib promote model
Evaluates the candidate (`challenger` or a version number) and the current champion on the fixed
held-out test set and moves the `champion` alias only if the candidate passes the metrics gate
(no number worse by more than `CRLIB_GATE_MAX_DROP_POINTS`, mean gain above
`CRLIB_GATE_MIN_MEAN_GAIN_POINTS`, the lower bound of a bootstrap 95% interval of the gain over test
fields at least 0). The gate refuses to run when a test visit (or another visit of a test field) is
in either model's training manifest (`exclude_seen` scores only the fields neither saw instead), and
refuses a challenger trained on simulator truth unless `allow_simulated`. Every decision, refusals
and dry runs included, is recorded in
the results database (`promotion_decisions`) and, except dry runs, as MLflow tags. A refusal is a
successful run whose return value lists the numbers that failed. Inference picks a new champion up
on its next run.
"""


@dag(
    dag_id="crlib_promote_model",
    schedule=None,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 0},
    tags=[*TAGS, "training"],
    doc_md=DOC,
    **DAG_ARGS,
    params={
        "model_name": Param(
            default="deepcr-acs-wfc", type="string", enum=["deepcr-acs-wfc", "deepcr-wfc3-uvis"]
        ),
        "version": Param(default="challenger", type="string", pattern="^(challenger|[0-9]+)$"),
        "dry_run": Param(default=False, type="boolean"),
        "allow_simulated": Param(
            default=False,
            type="boolean",
            description="Let a model trained on simulator truth become champion.",
        ),
        "exclude_seen": Param(
            default=False,
            type="boolean",
            description="Score only test fields neither model trained on, instead of refusing to run.",
        ),
    },
)
def crlib_promote_model() -> None:
    @task
    def promote(**context: Any) -> dict:
        from crlib.pipeline.lifecycle import promote_model
        from crlib.registry.gate_decision import GateThresholds
        from crlib_airflow.connections import task_settings

        params = context["params"]
        settings = task_settings()
        return promote_model(
            settings,
            model_name=params["model_name"],
            version=params["version"],
            dry_run=bool(params["dry_run"]),
            run_id=str(context["run_id"]),
            thresholds=GateThresholds(
                max_drop_points=settings.gate_max_drop_points,
                min_mean_gain_points=settings.gate_min_mean_gain_points,
                allow_simulated=bool(params.get("allow_simulated")),
                exclude_seen=bool(params.get("exclude_seen")),
            ),
        )

    promote()


crlib_promote_model()
