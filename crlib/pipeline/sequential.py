"""Run the ingestion stages in order in one process (``crlib run``): the DAG's work without Airflow."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Collection
from typing import Any

from crlib.config import Settings
from crlib.pipeline import stages
from crlib.pipeline.stage_names import STAGES, VISIT_STAGES

__all__ = ["CLI_DAG_ID", "STAGES", "run_pipeline"]

log = logging.getLogger(__name__)


#: The DAG id ``crlib run`` records its runs under.
CLI_DAG_ID = "crlib_cli_run"


def run_pipeline(
    settings: Settings,
    *,
    run_id: str | None = None,
    proposal_id: int | None = None,
    visits: list[str] | None = None,
    model: str | None = None,
    redo: Collection[str] = STAGES,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Poll, fetch, screen, build truth, infer and score every visit, then finish the run.

    Like the DAG, one visit's or exposure's failure never stops the others: bad data is a
    recorded outcome of its exposure, and an unexpected exception (a bug) in a stage is recorded
    (ledger ``errors``, traceback in the log), that visit's or exposure's later stages are
    skipped, and the run goes on; the run then ends ``failed``.

    Parameters
    ----------
    settings
        Effective settings.
    run_id
        Run id (default ``cli__<UTC timestamp>_<pid>``: two runs started in the same second differ).
    proposal_id, visits
        Reprocess a proposal (optionally some visits, any case) instead of polling for new
        releases.
    model
        Model to apply (default: the profile's per-filter/global shipped model or the champion).
    redo
        Stages (of :data:`STAGES`) to compute afresh; the others reuse what earlier runs produced
        when it is still valid (see :mod:`crlib.pipeline.reuse`).
    progress
        Called with ``(stage, item)`` before each step.

    Returns
    -------
    dict
        The run summary (see :func:`crlib.pipeline.stages.finish_run`); ``status`` is
        ``success``, ``partial`` or ``failed``.

    Raises
    ------
    RequestError
        The request resolves to nothing (see :func:`crlib.pipeline.stages.poll_visits`).
    """
    from crlib.db.runs import process_owner
    from crlib.errors import ModelError

    unknown = sorted(set(redo) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    run_id = run_id or f"cli__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M%S}_{os.getpid()}"
    notify = progress or (lambda stage, item: None)
    notify("poll", run_id)
    found = stages.poll_visits(
        settings,
        run_id=run_id,
        proposal_id=proposal_id,
        visits=visits,
        dag_id=CLI_DAG_ID,
        owner=process_owner(),
    )
    for visit in found:
        for name in VISIT_STAGES:
            notify(name, visit)
            if not _guarded(settings, run_id, visit, name, redo=name in redo):
                break  # later stages of this visit would only fail again
    for rootname in stages.list_exposures(settings, run_id=run_id, visits=found):
        notify("infer", rootname)
        try:
            predicted = _guarded(settings, run_id, rootname, "infer", model=model, redo="infer" in redo)
        except ModelError as exc:  # the model, not the exposure: every exposure would fail the same way
            stages.abort_run(settings, run_id=run_id, message=f"infer: {exc}")
            raise
        if predicted:
            notify("score", rootname)
            _guarded(settings, run_id, rootname, "score", model=model, redo="score" in redo)
    notify("finish", run_id)
    return stages.finish_run(
        settings, run_id=run_id, dag_id=CLI_DAG_ID, advance_watermark=proposal_id is None
    )


def _guarded(settings: Settings, run_id: str, item: str, stage: str, **options: Any) -> bool:
    """Run one stage step; an unexpected exception is recorded (the stage did) and swallowed.

    Returns whether the step finished. Errors that are about the whole run (a model that cannot
    be loaded, the database gone) propagate.
    """
    from crlib.errors import DatabaseError, ModelError, RequestError

    try:
        stages.run_stage(settings, stage, item, run_id=run_id, **options)
    except (ModelError, DatabaseError, RequestError, KeyboardInterrupt):
        raise
    except Exception as exc:
        from crlib.pipeline.ledger import RunLedger

        ledger = RunLedger(settings.data_root, run_id)
        if item not in ledger.errors():  # the stage records its own; anything else is recorded here
            ledger.record_error(item, f"{stage}: internal error {type(exc).__name__}: {exc}".splitlines()[0])
            log.exception("%s %s failed", stage, item)
        return False
    return True
