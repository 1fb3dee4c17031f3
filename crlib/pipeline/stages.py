"""The ingestion/reprocessing stages, one function per DAG task (also used by ``crlib run``).

Every function takes the settings and the run id, returns a small id for XCom, hands paths to the
next task through :class:`~crlib.pipeline.ledger.RunLedger`, and records its results in the
results database idempotently (re-running a task upserts the same rows). Expected per-exposure
outcomes (rejected, failed QA, unreadable file) are recorded with their reason and never raise, so
one bad exposure or visit never fails the others.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.config import Settings
from crlib.pipeline.ledger import RunLedger, run_key
from crlib.records import Observation, to_dict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


@contextmanager
def _database(settings: Settings, *, upgrade: bool = False) -> Iterator[sessionmaker[Session]]:
    """One engine for the task's database work; disposed when the block ends."""
    from crlib.db.session import open_results_db

    engine, sessions = open_results_db(settings, upgrade=upgrade, pool_size=1)
    try:
        yield sessions
    finally:
        engine.dispose()


@contextmanager
def _session(settings: Settings, *, upgrade: bool = False) -> Iterator[Session]:
    with _database(settings, upgrade=upgrade) as sessions, sessions() as session:
        yield session


def _observations(ledger: RunLedger, visit: str | None = None) -> list[Observation]:
    rows = ledger.observations()
    return [Observation(**row) for row in rows if visit is None or row["visit"] == visit]


def _visit_dir(settings: Settings, visit: str) -> Path:
    return settings.data_root / "archive" / run_key(visit)


# ----------------------------------------------------------------------------- poll
def poll_visits(
    settings: Settings,
    *,
    run_id: str,
    proposal_id: int | None = None,
    visits: list[str] | None = None,
    dag_id: str = "crlib_nightly_ingest",
) -> list[str]:
    """Find the visits to process and record their observations.

    Parameters
    ----------
    settings
        Effective settings (archive source, database).
    run_id
        Pipeline run id (Airflow run id).
    proposal_id
        Reprocess every visit of this proposal instead of polling by release date.
    visits
        With ``proposal_id``: restrict to these visit ids.
    dag_id
        Recorded with the run.

    Returns
    -------
    list of str
        Visit ids (``ipppss``), sorted. The watermark is *not* advanced here (see :func:`finish_run`).
    """
    from crlib.archive import archive_from_settings, poll_proposal, poll_released
    from crlib.db.repo import record_observations
    from crlib.db.runs import start_run
    from crlib.db.watermarks import DatabaseWatermarkStore

    ledger = RunLedger(settings.data_root, run_id)
    archive = archive_from_settings(settings)
    with _database(settings, upgrade=True) as sessions, sessions() as session:
        start_run(
            session,
            run_id=run_id,
            dag_id=dag_id,
            trigger="proposal" if proposal_id else "poll",
            proposal_id=proposal_id,
            params={"visits": visits or [], "archive": archive.source},
        )
        if proposal_id is not None:
            result = poll_proposal(archive, proposal_id)
        else:
            result = poll_released(archive, DatabaseWatermarkStore(sessions))
        observations = [o for o in result.observations if not visits or o.visit in visits]
        record_observations(session, observations)
    ledger.write_observations(
        [to_dict(o) for o in observations],
        poll={"source": result.source, "until_mjd": result.until_mjd, "proposal_id": proposal_id},
    )
    found = sorted({o.visit for o in observations})
    log.info("run %s: %d visits, %d exposures", run_id, len(found), len(observations))
    return found


# ----------------------------------------------------------------------------- fetch
def fetch_visit(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
    """Download a visit's calibrated products into ``<data_root>/archive/<visit>/``.

    Files already present with the right size/checksum are kept (``redo`` only matters for the
    local ledger state). Failed downloads are recorded in the ledger with their reason.
    """
    from crlib.archive import archive_from_settings, fetch_observations

    ledger = RunLedger(settings.data_root, run_id)
    observations = _observations(ledger, visit)
    report = fetch_observations(
        archive_from_settings(settings),
        observations,
        data_root=settings.data_root,
        concurrency=settings.download_concurrency,
    )
    files = {r.rootname: r.path for r in report.results if r.status != "failed"}
    failed = {r.rootname: r.reason for r in report.results if r.status == "failed"}
    ledger.update_visit(visit, files=files, fetch_failed=failed, fetch_retries=report.retries)
    if failed:
        log.warning("visit %s: %d downloads failed: %s", visit, len(failed), failed)
    return visit


# ----------------------------------------------------------------------------- screen
def screen_visit(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
    """Screen a visit's files by header rules and record every verdict with its reasons."""
    from crlib.db.repo import record_screening
    from crlib.screening import group_verdicts, screen_files

    ledger = RunLedger(settings.data_root, run_id)
    state = ledger.visit(visit)
    files: dict[str, str] = state.get("files", {})
    verdicts = screen_files(sorted(files.values()), profile=settings.instrument)
    with _session(settings) as session:
        record_screening(session, verdicts)
    sets = group_verdicts(verdicts)
    accepted = sorted(v.rootname for v in verdicts if v.verdict == "accept")
    ledger.update_visit(
        visit,
        accepted=accepted,
        rejected={
            v.rootname: [r.message for r in v.reasons if r.severity == "reject"]
            for v in verdicts
            if v.verdict == "reject"
        },
        training_usable=sorted(v.rootname for v in verdicts if v.usable_for_training),
        truth_sets=[list(s.accepted) for s in sets if s.gets_truth],
        no_truth_notes=[s.note for s in sets if not s.gets_truth and s.note],
    )
    return visit


# ----------------------------------------------------------------------------- truth
def build_visit_truth(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
    """Align and drizzle each truth set of a visit; record alignment and per-exposure truth."""
    from crlib.db.repo import record_alignment, record_truth
    from crlib.truth.visit import build_visit_truth as build_truth

    ledger = RunLedger(settings.data_root, run_id)
    state = ledger.visit(visit)
    files: dict[str, str] = state.get("files", {})
    truth_paths: dict[str, str] = {}
    statuses: dict[str, str] = {}
    for index, members in enumerate(state.get("truth_sets", [])):
        work = settings.data_root / "work" / run_key(visit) / f"set{index}"
        staged = work / "input" / visit
        staged.mkdir(parents=True, exist_ok=True)
        for old in staged.iterdir():
            old.unlink()
        for rootname in members:
            os.symlink(Path(files[rootname]).resolve(), staged / Path(files[rootname]).name)
        result = build_truth(
            staged, work_dir=work / "drizzle", out_dir=work / "truth", profile=settings.instrument
        )
        with _session(settings) as session:
            if result.alignment is not None:
                record_alignment(session, dataclasses.replace(result.alignment, visit=visit))
            for truth in result.exposures:
                record_truth(session, truth)
        for truth in result.exposures:
            statuses[truth.rootname] = truth.status
            if truth.path and truth.status != "failed":
                truth_paths[truth.rootname] = truth.path
    ledger.update_visit(visit, truth=truth_paths, truth_status=statuses)
    return visit


def list_exposures(settings: Settings, *, run_id: str, visits: list[str]) -> list[str]:
    """Accepted exposures of every visit the run screened (whatever happened to its truth)."""
    ledger = RunLedger(settings.data_root, run_id)
    rootnames: list[str] = []
    for _, state in ledger.visits():
        rootnames.extend(state.get("accepted", []))
    return sorted(rootnames)


# ----------------------------------------------------------------------------- infer / score
def _visit_state_of(ledger: RunLedger, rootname: str) -> dict[str, Any]:
    return ledger.visit(rootname[:6])


def infer_exposure(
    settings: Settings, *, run_id: str, rootname: str, model: str | None = None, redo: bool = True
) -> str:
    """Run the deepCR model on one exposure and record the prediction (failures with reason)."""
    from crlib.db.repo import record_predictions
    from crlib.model.exposure import predict_exposure
    from crlib.profiles import get_profile

    ledger = RunLedger(settings.data_root, run_id)
    path = Path(_visit_state_of(ledger, rootname)["files"][rootname])
    out_dir = settings.data_root / "predictions" / run_key(rootname[:6])
    chosen = None if model in (None, "champion", "deepcr") else model
    try:
        prediction = predict_exposure(
            path,
            out_dir=out_dir,
            model=chosen,
            device=settings.device,
            threads=settings.threads or None,
            expected_profile=get_profile(settings.instrument),
        )
    except Exception as exc:
        from crlib.errors import CrlibError

        if not isinstance(exc, CrlibError):
            raise
        ledger.update_exposure(rootname, prediction=None, prediction_error=str(exc))
        return rootname
    if prediction.status == "ok":
        with _session(settings) as session:
            record_predictions(session, [prediction])
    ledger.update_exposure(
        rootname,
        prediction=prediction.path if prediction.status == "ok" else None,
        prediction_error=prediction.reason,
        model=f"{prediction.model_name}:{prediction.model_version}",
        seconds=prediction.seconds,
    )
    return rootname


def score_exposure(
    settings: Settings, *, run_id: str, rootname: str, model: str | None = None, redo: bool = True
) -> str:
    """Score a prediction against the exposure's truth; record metrics and CR statistics."""
    from crlib.db.repo import record_cr_statistics, record_metrics
    from crlib.metrics.crstats import cr_statistics
    from crlib.metrics.scoring import read_truth, score_prediction_file
    from crlib.profiles import get_profile

    ledger = RunLedger(settings.data_root, run_id)
    exposure = ledger.exposure(rootname)
    visit_state = _visit_state_of(ledger, rootname)
    truth_path = visit_state.get("truth", {}).get(rootname)
    if not exposure.get("prediction") or not truth_path:
        ledger.update_exposure(
            rootname, scored=False, score_note="no prediction" if truth_path else "no truth"
        )
        return rootname
    observation = next((o for o in _observations(ledger, rootname[:6]) if o.rootname == rootname), None)
    field_type = observation.field_type if observation else None
    metrics, _ = score_prediction_file(Path(exposure["prediction"]), Path(truth_path), field_type=field_type)
    exptime = observation.exptime_s if observation else 0.0
    profile = get_profile(settings.instrument)
    statistics = [
        cr_statistics(mask, rootname=rootname, chip=chip, exptime_s=exptime, profile=profile, valid=valid)
        for chip, (mask, valid) in sorted(read_truth(Path(truth_path)).items())
    ]
    with _session(settings) as session:
        record_metrics(session, [metrics])
        record_cr_statistics(session, statistics)
    ledger.update_exposure(rootname, scored=True, tpr_at_fpr=metrics.tpr_at_fpr, field_type=field_type)
    return rootname


# ----------------------------------------------------------------------------- finish
def finish_run(settings: Settings, *, run_id: str, dag_id: str, advance_watermark: bool) -> dict[str, Any]:
    """Summarise the run, record its end, and (nightly runs) advance the archive watermark.

    The watermark moves to the poll's upper bound only when every polled visit reached the
    screening stage (its verdicts are recorded); otherwise it stays, and the next poll finds the
    unrecorded visits again.
    """
    from crlib.db.runs import finish_run as record_finish
    from crlib.db.watermarks import DatabaseWatermarkStore

    ledger = RunLedger(settings.data_root, run_id)
    polled = sorted({o.visit for o in _observations(ledger)})
    visit_states = dict(ledger.visits())
    unrecorded = [v for v in polled if "accepted" not in visit_states.get(v, {})]
    exposures = dict(ledger.exposures())
    summary: dict[str, Any] = {
        "visits": len(polled),
        "visits_unrecorded": unrecorded,
        "exposures": sum(len(s.get("files", {})) for s in visit_states.values()),
        "accepted": sum(len(s.get("accepted", [])) for s in visit_states.values()),
        "rejected": {r: why for s in visit_states.values() for r, why in s.get("rejected", {}).items()},
        "truth": {r: st for s in visit_states.values() for r, st in s.get("truth_status", {}).items()},
        "predicted": sum(1 for e in exposures.values() if e.get("prediction")),
        "prediction_errors": {
            r: e["prediction_error"] for r, e in exposures.items() if e.get("prediction_error")
        },
        "scored": sum(1 for e in exposures.values() if e.get("scored")),
    }
    poll_state = ledger.poll()
    watermark = None
    with _database(settings) as sessions:
        with sessions() as session:
            record_finish(session, run_id=run_id, status="success", summary=summary)
        if advance_watermark and not unrecorded and poll_state.get("until_mjd") is not None:
            watermark = DatabaseWatermarkStore(sessions).advance(
                poll_state["source"], float(poll_state["until_mjd"])
            )
    summary["watermark_mjd"] = watermark
    log.info("run %s finished: %s", run_id, summary)
    return summary
