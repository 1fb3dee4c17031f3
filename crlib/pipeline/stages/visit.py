"""The visit stages before truth: poll (the run's visits), fetch (downloads) and screen (header rules)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from crlib.config import Settings
from crlib.pipeline import reuse
from crlib.pipeline.database import results_database, results_session
from crlib.pipeline.ledger import RunLedger
from crlib.pipeline.stages import support
from crlib.provenance import code_version
from crlib.records import Observation, to_dict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from crlib.archive import PollResult
    from crlib.pipeline.state import VisitChanges, VisitState
    from crlib.records import ScreeningVerdict

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- poll
def poll_visits(
    settings: Settings,
    *,
    run_id: str,
    dag_id: str,
    proposal_id: int | None = None,
    visits: list[str] | None = None,
    owner: str | None = None,
) -> list[str]:
    """Find the visits to process and record their observations.

    Parameters
    ----------
    settings
        Effective settings (archive source, database).
    run_id
        Pipeline run id (Airflow run id).
    dag_id
        The caller's DAG id (``crlib_nightly_ingest``, ``crlib_reprocess_proposal``,
        ``crlib_cli_run``), recorded with the run.
    proposal_id
        Reprocess every visit of this proposal instead of polling by release date.
    visits
        With ``proposal_id``: restrict to these visit ids (any case).
    owner
        ``host:pid`` of a run that lives in this process (``crlib run``): if the process dies,
        the next run marks it abandoned at once (see :func:`crlib.db.runs.reap_abandoned`).

    Returns
    -------
    list of str
        Visit ids (``ipppss``), sorted; empty when a nightly poll finds nothing new. The
        watermark is *not* advanced here (see :func:`finish_run`).

    Raises
    ------
    RequestError
        A reprocessing request that resolves to no exposures (a proposal without any for this
        instrument, a visit not in the proposal) or is malformed; the run is recorded ``failed``
        with the same message.
    """
    import datetime as dt

    from crlib.archive import archive_from_settings
    from crlib.db.repo import record_observations
    from crlib.db.runs import finish_run as record_finish
    from crlib.db.runs import reap_abandoned, start_run
    from crlib.errors import RequestError

    ledger = RunLedger(settings.data_root, run_id)
    archive = archive_from_settings(settings)
    with results_database(settings, upgrade=True) as sessions, sessions() as session:
        reap_abandoned(session, lease=dt.timedelta(minutes=settings.run_lease_minutes), exclude=run_id)
        start_run(
            session,
            run_id=run_id,
            dag_id=dag_id,
            trigger="proposal" if proposal_id else "poll",
            proposal_id=proposal_id,
            params={"visits": visits or [], "archive": archive.source},
            owner=owner,
        )
        try:
            result, observations = _requested(settings, archive, sessions, proposal_id, visits)
        except RequestError as exc:
            ledger.record_error("poll", str(exc))
            record_finish(
                session, run_id=run_id, status="failed", message=str(exc), summary={"error": str(exc)}
            )
            raise
        record_observations(session, observations)
    ledger.write_observations(
        [to_dict(o) for o in observations],
        poll={"source": result.source, "until_mjd": result.until_mjd, "proposal_id": proposal_id},
    )
    found = sorted({o.visit for o in observations})
    log.info("run %s: %d visits, %d exposures", run_id, len(found), len(observations))
    return found


def _requested(
    settings: Settings,
    archive: Any,
    sessions: sessionmaker[Session],
    proposal_id: int | None,
    visits: list[str] | None,
) -> tuple[PollResult, list[Observation]]:
    """The poll's result and the observations the request names (every one a nightly poll finds).

    Raises
    ------
    RequestError
        The request is malformed, or names a proposal without exposures or visits not in it.
    """
    from crlib.archive import poll_proposal, poll_released
    from crlib.db.watermarks import DatabaseWatermarkStore
    from crlib.errors import RequestError
    from crlib.pipeline.request import normalise_request
    from crlib.profiles import get_profile

    wanted = normalise_request(proposal_id, visits)
    if proposal_id is not None:
        result = poll_proposal(archive, proposal_id)
        if not result.observations:
            instrument = get_profile(settings.instrument).mast_instrument_name
            raise RequestError(
                f"proposal {proposal_id} has no {instrument} exposures "
                f"in {archive.source}: check the proposal number (and CRLIB_INSTRUMENT)"
            )
    else:
        result = poll_released(archive, DatabaseWatermarkStore(sessions))
    observations = [o for o in result.observations if not wanted or o.visit in wanted]
    missing = sorted(set(wanted) - {o.visit for o in observations})
    if missing:
        known = sorted({o.visit for o in result.observations})
        raise RequestError(
            f"visit(s) {', '.join(missing)} not found in proposal {proposal_id} "
            f"(its visits: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''})"
        )
    return result, observations


# ----------------------------------------------------------------------------- fetch
def fetch_visit(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
    """Download a visit's calibrated products into ``<data_root>/archive/<visit>/``.

    Parameters
    ----------
    settings
        Effective settings (archive source, data root, download concurrency).
    run_id
        Pipeline run id.
    visit
        Visit id (``ipppss``).
    redo
        ``True``: delete the visit's files (and partial downloads) and download them again.
        ``False``: keep files already there whose size and checksum match the archive's listing
        (a retried task or a reprocessing without ``fetch`` downloads nothing twice).

    Returns
    -------
    str
        ``visit``. Failed downloads are recorded in the ledger with their reason, never raised;
        the files' md5 checksums go to the ledger for the later stages' reuse checks.
    """
    from crlib.archive import archive_from_settings, fetch_observations

    ledger = RunLedger(settings.data_root, run_id)
    observations = support.observations(ledger, visit)
    with results_session(settings, run_id=run_id):
        pass  # heartbeat: the download below can take a while
    if redo:
        _forget_downloads(settings, observations)
    report = fetch_observations(
        archive_from_settings(settings),
        observations,
        data_root=settings.data_root,
        concurrency=settings.download_concurrency,
    )
    ok = [r for r in report.results if r.status != "failed"]
    failed = {r.rootname: r.reason for r in report.results if r.status == "failed"}
    ledger.update_visit(
        visit,
        files={r.rootname: r.path for r in ok},
        checksums={r.rootname: r.checksum for r in ok if r.checksum},
        fetch_failed=failed,
        fetch_retries=report.retries,
        fetch_reused=sorted(r.rootname for r in ok if r.status == "cached"),
    )
    if failed:
        log.warning("visit %s: %d downloads failed: %s", visit, len(failed), failed)
    return visit


def _forget_downloads(settings: Settings, observations: list[Observation]) -> None:
    """Delete the visit's downloaded files and partial downloads (``redo``: download again)."""
    from crlib.archive.download import safe_destination

    for observation in observations:
        try:
            dest = safe_destination(settings.data_root, observation.visit, observation.product_filename)
        except ValueError:
            continue  # fetch_observations records the unsafe name as a failed download
        dest.unlink(missing_ok=True)
        dest.with_name(dest.name + ".part").unlink(missing_ok=True)


# ----------------------------------------------------------------------------- screen
def screen_visit(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
    """Screen a visit's files by header rules and record every verdict with its reasons.

    Parameters
    ----------
    settings
        Effective settings (instrument profile, database).
    run_id
        Pipeline run id.
    visit
        Visit id.
    redo
        ``False``: reuse the verdicts recorded for this visit (``<data_root>/outputs/screen/``)
        when they were made from the same files (checksums), profile and crlib version, and record
        them again (idempotent upsert). ``True``: read the headers and screen again.

    Returns
    -------
    str
        ``visit``. Exposures whose download failed are recorded as rejected (rule
        ``file.download_failed``, with the download's reason), so what an earlier run derived
        from them leaves the current statistics; damaged files (screening rules ``file.*`` and
        ``data.*``) are listed in the ledger's ``quarantined`` with their one-line reason.
    """
    from crlib.db.repo import record_screening

    ledger = RunLedger(settings.data_root, run_id)
    state = ledger.visit(visit)
    verdicts, reused = _screen_verdicts(settings, visit, state, redo=redo)
    with results_session(settings, run_id=run_id) as session:
        record_screening(session, [*verdicts, *_not_downloaded(state)])
    changes = _screen_changes(verdicts)
    changes["screen_reused"] = reused
    changes["image_field_type"] = _label_unlabelled_by_image(
        settings, run_id, ledger, visit, state.files, changes.get("accepted") or [], redo
    )
    ledger.update_visit(visit, **changes)
    return visit


def _screen_verdicts(
    settings: Settings, visit: str, state: VisitState, *, redo: bool
) -> tuple[list[ScreeningVerdict], bool]:
    """The visit's verdicts, one per exposure, and whether they are an earlier run's (reused)."""
    from crlib.screening import is_duplicate, screen_files

    outputs = reuse.StageOutputs(settings.data_root)
    identity = {
        "inputs": reuse.input_identity(state),
        "profile": settings.instrument,
        "code": code_version(),
    }
    record = None if redo else outputs.matching("screen", visit, identity)
    if record is not None:
        verdicts = [reuse.verdict_from_dict(row) for row in record["verdicts"]]
        log.info("visit %s: reusing %d recorded screening verdicts", visit, len(verdicts))
        return verdicts, True
    # One verdict per exposure: a second copy of a rootname (rejected as a duplicate) is not
    # recorded, the copy screening kept stands for the exposure.
    verdicts = [
        v
        for v in screen_files(sorted(state.files.values()), profile=settings.instrument)
        if not is_duplicate(v)
    ]
    outputs.write("screen", visit, {**identity, "verdicts": [to_dict(v) for v in verdicts]})
    return verdicts, False


def _not_downloaded(state: VisitState) -> list[ScreeningVerdict]:
    """Rejections (rule ``file.download_failed``) of the exposures whose download failed."""
    from crlib.records import ScreeningReason, ScreeningVerdict

    return [
        ScreeningVerdict(
            file=rootname,
            rootname=rootname,
            verdict="reject",
            usable_for_training=False,
            reasons=(
                ScreeningReason(
                    rule="file.download_failed",
                    keyword="",
                    value=None,
                    message=f"{rootname}: download failed: {why} (the next run downloads it again)",
                ),
            ),
        )
        for rootname, why in sorted(state.fetch_failed.items())
        if rootname not in state.files
    ]


def _screen_changes(verdicts: list[ScreeningVerdict]) -> VisitChanges:
    """What screening leaves in the visit's state: accepted, rejected, quarantined, truth sets, notes."""
    from crlib.screening import group_verdicts, is_damage

    quarantined = {
        v.rootname: "; ".join(r.message for r in v.reasons if is_damage(r))
        for v in verdicts
        if v.verdict == "reject" and any(is_damage(r) for r in v.reasons)
    }
    for rootname, why in quarantined.items():
        log.warning("quarantined %s: %s", rootname, why)
    sets = group_verdicts(verdicts)
    return {
        "quarantined": quarantined,
        "accepted": sorted(v.rootname for v in verdicts if v.verdict == "accept"),
        "rejected": {
            v.rootname: [r.message for r in v.reasons if r.severity == "reject"]
            for v in verdicts
            if v.verdict == "reject"
        },
        "training_usable": sorted(v.rootname for v in verdicts if v.usable_for_training),
        "truth_sets": [list(s.accepted) for s in sets if s.gets_truth],
        "no_truth_notes": [s.note for s in sets if not s.gets_truth and s.note],
        "notes": {
            v.rootname: [r.message for r in v.reasons if r.severity != "reject"]
            for v in verdicts
            if v.verdict == "accept" and any(r.severity != "reject" for r in v.reasons)
        },
    }


def _label_unlabelled_by_image(
    settings: Settings,
    run_id: str,
    ledger: RunLedger,
    visit: str,
    files: dict[str, str],
    accepted: list[str],
    redo: bool,
) -> dict[str, Any] | None:
    """Field type from the pixels for accepted exposures the metadata left unlabelled (recorded)."""
    from crlib.db.repo import record_field_types
    from crlib.pipeline import field_types

    rootnames = field_types.unlabelled(support.observations(ledger, visit), accepted)
    if not rootnames:
        return None
    label, reused = field_types.classify_visit_pixels(
        files, accepted, data_root=settings.data_root, visit=visit, redo=redo
    )
    log.info(
        "visit %s: field type from the image for %d exposure(s): %s", visit, len(rootnames), label.describe()
    )
    with results_session(settings, run_id=run_id) as session:
        record_field_types(session, {rootname: label for rootname in rootnames})
    return field_types.ledger_entry(label, rootnames, reused=reused)
