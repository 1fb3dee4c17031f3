"""The ingestion/reprocessing stages, one function per DAG task (also used by ``crlib run``).

Every function takes the settings and the run id, returns a small id for XCom, hands paths to the
next task through :class:`~crlib.pipeline.ledger.RunLedger`, and records its results in the
results database idempotently (re-running a task upserts the same rows). Expected per-exposure
outcomes (rejected, failed QA, unreadable file) are recorded with their reason and never raise, so
one bad exposure or visit never fails the others.

Quarantine: bad data of one exposure (damaged, unreadable, all-NaN ...) ends as a recorded outcome
of that exposure with a one-line reason. An unexpected exception (a bug) is first recorded in the
ledger (``errors``) and on the exposures it hit, then raised: the Airflow task fails loudly while
the other mapped tasks go on, and ``crlib run`` goes on with the next visit (see
:mod:`crlib.pipeline.sequential`). :func:`finish_run` turns all of it into the run's status:
``success``, ``partial`` (some exposures failed; counts and reasons in the summary) or ``failed``.

``redo=False`` (the reprocessing DAG's stages not listed in its ``stages`` Param) makes a stage
reuse what an earlier run produced (kept by :class:`~crlib.pipeline.reuse.StageOutputs` with
fingerprints of its inputs) when its inputs and output files are unchanged, and record those
results again; anything changed or missing is computed afresh.

Modules: :mod:`~crlib.pipeline.stages.visit` (poll, fetch, screen),
:mod:`~crlib.pipeline.stages.truth` (truth), :mod:`~crlib.pipeline.stages.exposure` (list, infer,
score), :mod:`~crlib.pipeline.stages.finish` (abort, finish) and
:mod:`~crlib.pipeline.stages.support` (database sessions, recording a failure). What the stages
hand on per visit and exposure is declared in :mod:`crlib.pipeline.state`.
"""

from __future__ import annotations

from crlib.config import Settings
from crlib.pipeline.stage_names import EXPOSURE_STAGES, VISIT_STAGES
from crlib.pipeline.stages.exposure import infer_exposure, list_exposures, score_exposure
from crlib.pipeline.stages.finish import abort_run, finish_run
from crlib.pipeline.stages.truth import truth_stage
from crlib.pipeline.stages.visit import fetch_visit, poll_visits, screen_visit

__all__ = [
    "abort_run",
    "fetch_visit",
    "finish_run",
    "infer_exposure",
    "list_exposures",
    "poll_visits",
    "run_stage",
    "score_exposure",
    "screen_visit",
    "truth_stage",
]


_VISIT_STEPS = {"fetch": fetch_visit, "screen": screen_visit, "truth": truth_stage}
_EXPOSURE_STEPS = {"infer": infer_exposure, "score": score_exposure}


def run_stage(
    settings: Settings, stage: str, item: str, *, run_id: str, redo: bool = True, model: str | None = None
) -> str:
    """Run one visit or exposure stage by its name (what a DAG task or a ``crlib run`` step does).

    Parameters
    ----------
    settings
        Effective settings.
    stage
        A name of :data:`~crlib.pipeline.stage_names.STAGES`.
    item
        The visit id (``fetch``, ``screen``, ``truth``) or rootname (``infer``, ``score``).
    run_id
        Pipeline run id.
    redo
        ``False``: reuse what an earlier run produced while it is still valid.
    model
        The exposure stages' model (see :func:`infer_exposure`); ignored by the visit stages.

    Returns
    -------
    str
        ``item`` (for XCom).

    Raises
    ------
    ValueError
        An unknown stage name.
    """
    if stage in VISIT_STAGES:
        return _VISIT_STEPS[stage](settings, run_id=run_id, visit=item, redo=redo)
    if stage in EXPOSURE_STAGES:
        return _EXPOSURE_STEPS[stage](settings, run_id=run_id, rootname=item, model=model, redo=redo)
    raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(VISIT_STAGES + EXPOSURE_STAGES)}")
