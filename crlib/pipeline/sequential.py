"""Run the ingestion stages in order in one process (``crlib run``): the DAG's work without Airflow."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from typing import Any

from crlib.config import Settings
from crlib.pipeline import stages

log = logging.getLogger(__name__)

#: Stages a run can redo or reuse (the reprocessing DAG's ``stages`` Param).
STAGES: tuple[str, ...] = ("fetch", "screen", "truth", "infer", "score")


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

    Parameters
    ----------
    settings
        Effective settings.
    run_id
        Run id (default ``cli__<UTC timestamp>``).
    proposal_id, visits
        Reprocess a proposal (optionally some visits) instead of polling for new releases.
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
        The run summary (see :func:`crlib.pipeline.stages.finish_run`).
    """
    unknown = sorted(set(redo) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    run_id = run_id or f"cli__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M%S}"
    notify = progress or (lambda stage, item: None)
    notify("poll", run_id)
    found = stages.poll_visits(
        settings, run_id=run_id, proposal_id=proposal_id, visits=visits, dag_id="crlib_cli_run"
    )
    for visit in found:
        for name, step in (
            ("fetch", stages.fetch_visit),
            ("screen", stages.screen_visit),
            ("truth", stages.build_visit_truth),
        ):
            notify(name, visit)
            step(settings, run_id=run_id, visit=visit, redo=name in redo)
    for rootname in stages.list_exposures(settings, run_id=run_id, visits=found):
        notify("infer", rootname)
        stages.infer_exposure(settings, run_id=run_id, rootname=rootname, model=model, redo="infer" in redo)
        notify("score", rootname)
        stages.score_exposure(settings, run_id=run_id, rootname=rootname, model=model, redo="score" in redo)
    notify("finish", run_id)
    return stages.finish_run(
        settings, run_id=run_id, dag_id="crlib_cli_run", advance_watermark=proposal_id is None
    )
