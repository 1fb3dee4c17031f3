"""The ingestion DAGs' stage and summary tasks: one body each, wired by the DAG files.

A stage task runs one visit or exposure stage (:func:`crlib.pipeline.stages.run_stage`) on the
item it is mapped over. What varies between the DAGs comes from the run's params when a DAG has
them (the reprocessing DAG): ``instrument``, ``model``, and ``stages`` (the stages to redo; the
others reuse what earlier runs produced). Heavy imports happen inside the tasks, never at parse
time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import task

from crlib_airflow.assets import NEW_TRUTH


def _params(context: Mapping[str, Any]) -> Mapping[str, Any]:
    return context.get("params") or {}


def stage_task(stage: str, *, redo: bool | None = None, **task_args: Any) -> Any:
    """A mapped task (``task_id`` = ``stage``) running ``stage`` on its ``item``.

    Parameters
    ----------
    stage
        A name of :data:`crlib.pipeline.stage_names.STAGES`.
    redo
        ``True``/``False``: always redo / reuse. ``None``: redo when the run's ``stages`` param
        (empty: every stage) lists ``stage``.
    **task_args
        Arguments of ``@task`` (pool, retries, queue ...).

    Returns
    -------
    object
        The TaskFlow task; call ``.expand(item=...)`` on it.
    """

    @task(task_id=stage, **task_args)
    def run(item: str, **context: Any) -> str:
        from crlib.pipeline.stage_names import STAGES
        from crlib.pipeline.stages import run_stage
        from crlib_airflow.connections import task_settings

        params = _params(context)
        return run_stage(
            task_settings(instrument=params.get("instrument")),
            stage,
            item,
            run_id=str(context["run_id"]),
            redo=stage in (params.get("stages") or STAGES) if redo is None else redo,
            model=params.get("model") or None,
        )

    return run


def exposures_task() -> Any:
    """The task listing the accepted exposures of every visit the run screened."""

    @task(task_id="exposures", trigger_rule="all_done")
    def exposures(visits: list[str], **context: Any) -> list[str]:
        from crlib.pipeline.stages import list_exposures
        from crlib_airflow.connections import task_settings

        params = _params(context)
        return list_exposures(
            task_settings(instrument=params.get("instrument")),
            run_id=str(context["run_id"]),
            visits=list(visits or []),
        )

    return exposures


def summary_task(dag_id: str, *, advance_watermark: bool) -> Any:
    """The run's last task: finish the run, announce new truth, fail the DAG run if it failed."""

    @task(task_id="summary", trigger_rule="all_done", outlets=[NEW_TRUTH])
    def summary(scored: list[str], **context: Any) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from crlib.pipeline.stages import finish_run
        from crlib_airflow.assets import announce_new_truth
        from crlib_airflow.connections import task_settings

        result = finish_run(
            task_settings(instrument=_params(context).get("instrument")),
            run_id=str(context["run_id"]),
            dag_id=dag_id,
            advance_watermark=advance_watermark,
        )
        announce_new_truth(result, context)
        if result["status"] == "failed":  # recorded with its reason; the DAG run must not look green
            raise AirflowFailException(f"run failed: {result['message']}")
        return result

    return summary


def wire_stages(visits: Any, *, redo_fetch: bool | None = None, redo: bool | None = None) -> Any:
    """fetch → screen → truth per visit, then exposures → infer → score per exposure, then summary's input.

    Parameters
    ----------
    visits
        The poll task's output (visit ids).
    redo_fetch, redo
        ``redo`` of the fetch task and of the others (see :func:`stage_task`).

    Returns
    -------
    object
        The score tasks' output (what the summary task takes).
    """
    from crlib_airflow.defaults import ARCHIVE_TASK_ARGS, INFERENCE_TASK_ARGS

    fetch = stage_task("fetch", redo=redo_fetch, **ARCHIVE_TASK_ARGS)
    screen = stage_task("screen", redo=redo)
    truth = stage_task("truth", redo=redo)
    infer = stage_task("infer", redo=redo, **INFERENCE_TASK_ARGS)
    score = stage_task("score", redo=redo)
    truths = truth.expand(item=screen.expand(item=fetch.expand(item=visits)))
    rootnames = exposures_task()(truths)
    return score.expand(item=infer.expand(item=rootnames))
