"""Operator-triggered reprocessing of one proposal (or some of its visits)."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from crlib.pipeline.stage_names import STAGES
from crlib_airflow.defaults import ARCHIVE_TASK_ARGS, DAG_ARGS, DEFAULT_ARGS, TAGS
from crlib_airflow.stage_tasks import summary_task, wire_stages

DOC = """
### crlib reprocess proposal
Trigger from the Airflow UI with a proposal id. Re-runs the chosen `stages` for every visit of the
proposal (or only `visits`), replacing that proposal's rows in the results database — never
duplicating them. `model` is a registry alias (`champion`, `challenger`) or a version number.
Stages not listed reuse what earlier runs produced (downloads, screening verdicts, truth masks,
predictions, metrics) while their inputs and files are unchanged, and record it again; e.g.
`stages: ["infer", "score"]` scores a new model against the recorded truth without drizzling again.
New truth updates the `crlib://results/truth` asset.
"""


@dag(
    dag_id="crlib_reprocess_proposal",
    schedule=None,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "reprocess"],
    doc_md=DOC,
    **DAG_ARGS,
    params={
        # No minimum/maximum: the form would clamp -5 to 1 and run a proposal nobody asked for. The
        # poll task checks the number and fails with the reason (crlib.pipeline.request.normalise_request).
        "proposal_id": Param(
            type="integer", description="HST proposal number (1-99999), e.g. 10775. Required."
        ),
        "visits": Param(
            default=None,
            type=["null", "array"],
            items={"type": "string", "pattern": "^[A-Za-z0-9]{6}$"},
            description="Optional visit ids (ipppss, any case); empty means every visit of the proposal.",
        ),
        "model": Param(
            default="champion",
            type=["null", "string"],
            pattern="^(champion|challenger|deepcr|[0-9]+)$",
            description="Optional: registry alias, version number, or 'deepcr' for the shipped weights "
            "(default: champion, or deepCR's weights with a warning when none is registered).",
        ),
        "stages": Param(
            default=list(STAGES),
            type=["null", "array"],
            items={"type": "string", "enum": list(STAGES)},
            uniqueItems=True,
            description="Optional: stages to redo (default: all); stages not listed reuse what is recorded.",
        ),
        "instrument": Param(default="acs_wfc", type="string", enum=["acs_wfc", "wfc3_uvis"]),
    },
)
def crlib_reprocess_proposal() -> None:
    @task(**ARCHIVE_TASK_ARGS)
    def poll(params: dict, **context: object) -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        from crlib.errors import RequestError
        from crlib.pipeline.stages import poll_visits
        from crlib_airflow.connections import task_settings

        try:
            return poll_visits(
                task_settings(instrument=params["instrument"]),
                run_id=str(context["run_id"]),
                dag_id="crlib_reprocess_proposal",
                proposal_id=int(params["proposal_id"]),
                visits=list(params["visits"] or []),
            )
        except RequestError as exc:  # nothing to process: fail at once with the reason, no retries
            raise AirflowFailException(str(exc)) from exc

    # Each stage redoes its work when the run's `stages` param lists it, else reuses what is recorded.
    scored = wire_stages(poll())
    summary_task("crlib_reprocess_proposal", advance_watermark=False)(scored)


crlib_reprocess_proposal()
