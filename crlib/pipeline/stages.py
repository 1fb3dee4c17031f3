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
from crlib.pipeline import reuse
from crlib.pipeline.ledger import RunLedger, run_key
from crlib.provenance import code_version
from crlib.records import Observation, to_dict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


@contextmanager
def _database(
    settings: Settings, *, run_id: str | None = None, upgrade: bool = False
) -> Iterator[sessionmaker[Session]]:
    """One engine for the task's database work; disposed when the block ends.

    With ``run_id`` the run's heartbeat is touched first: every stage is a sign of life, and a run
    without one for ``CRLIB_RUN_LEASE_MINUTES`` is recorded as abandoned by the next run.
    """
    from crlib.db.runs import touch_run
    from crlib.db.session import open_results_db

    engine, sessions = open_results_db(settings, upgrade=upgrade, pool_size=1)
    try:
        if run_id is not None:
            with sessions() as session:
                touch_run(session, run_id=run_id)
        yield sessions
    finally:
        engine.dispose()


@contextmanager
def _session(settings: Settings, *, run_id: str | None = None, upgrade: bool = False) -> Iterator[Session]:
    with _database(settings, run_id=run_id, upgrade=upgrade) as sessions, sessions() as session:
        yield session


def _record_error(ledger: RunLedger, key: str, stage: str, exc: BaseException) -> str:
    """Put an unexpected exception (a bug) in the ledger's ``errors``; returns its one-line text."""
    text = f"{stage}: internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    text = text.rstrip(": ") + " (a crlib bug: the traceback is in the log)"
    ledger.record_error(key, text)
    log.exception("%s %s failed", stage, key)
    return text


def _observations(ledger: RunLedger, visit: str | None = None) -> list[Observation]:
    rows = ledger.observations()
    return [Observation(**row) for row in rows if visit is None or row["visit"] == visit]


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

    from crlib.archive import archive_from_settings, poll_proposal, poll_released
    from crlib.db.repo import record_observations
    from crlib.db.runs import finish_run as record_finish
    from crlib.db.runs import reap_abandoned, start_run
    from crlib.db.watermarks import DatabaseWatermarkStore
    from crlib.errors import RequestError
    from crlib.pipeline.request import normalise_request
    from crlib.profiles import get_profile

    ledger = RunLedger(settings.data_root, run_id)
    archive = archive_from_settings(settings)
    with _database(settings, upgrade=True) as sessions, sessions() as session:
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
    from crlib.archive.download import safe_destination

    ledger = RunLedger(settings.data_root, run_id)
    observations = _observations(ledger, visit)
    with _session(settings, run_id=run_id):
        pass  # heartbeat: the download below can take a while
    if redo:
        for observation in observations:
            try:
                dest = safe_destination(settings.data_root, observation.visit, observation.product_filename)
            except ValueError:
                continue  # fetch_observations records the unsafe name as a failed download
            dest.unlink(missing_ok=True)
            dest.with_name(dest.name + ".part").unlink(missing_ok=True)
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
    from crlib.records import ScreeningReason, ScreeningVerdict
    from crlib.screening import group_verdicts, is_damage, is_duplicate, screen_files

    ledger = RunLedger(settings.data_root, run_id)
    state = ledger.visit(visit)
    files: dict[str, str] = state.get("files", {})
    fetch_failed: dict[str, str] = state.get("fetch_failed", {})
    outputs = reuse.StageOutputs(settings.data_root)
    identity = {
        "inputs": reuse.input_identity(state),
        "profile": settings.instrument,
        "code": code_version(),
    }
    record = None if redo else outputs.matching("screen", visit, identity)
    reused = record is not None
    if record is not None:
        verdicts = [reuse.verdict_from_dict(row) for row in record["verdicts"]]
        log.info("visit %s: reusing %d recorded screening verdicts", visit, len(verdicts))
    else:
        # One verdict per exposure: a second copy of a rootname (rejected as a duplicate) is not
        # recorded, the copy screening kept stands for the exposure.
        verdicts = [
            v
            for v in screen_files(sorted(files.values()), profile=settings.instrument)
            if not is_duplicate(v)
        ]
        outputs.write("screen", visit, {**identity, "verdicts": [to_dict(v) for v in verdicts]})
    not_downloaded = [
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
        for rootname, why in sorted(fetch_failed.items())
        if rootname not in files
    ]
    with _session(settings, run_id=run_id) as session:
        record_screening(session, [*verdicts, *not_downloaded])
    quarantined = {
        v.rootname: "; ".join(r.message for r in v.reasons if is_damage(r))
        for v in verdicts
        if v.verdict == "reject" and any(is_damage(r) for r in v.reasons)
    }
    for rootname, why in quarantined.items():
        log.warning("quarantined %s: %s", rootname, why)
    sets = group_verdicts(verdicts)
    accepted = sorted(v.rootname for v in verdicts if v.verdict == "accept")
    image_field_type = _label_unlabelled_by_image(settings, run_id, ledger, visit, files, accepted, redo)
    ledger.update_visit(
        visit,
        image_field_type=image_field_type,
        accepted=accepted,
        rejected={
            v.rootname: [r.message for r in v.reasons if r.severity == "reject"]
            for v in verdicts
            if v.verdict == "reject"
        },
        training_usable=sorted(v.rootname for v in verdicts if v.usable_for_training),
        truth_sets=[list(s.accepted) for s in sets if s.gets_truth],
        no_truth_notes=[s.note for s in sets if not s.gets_truth and s.note],
        quarantined=quarantined,
        notes={
            v.rootname: [r.message for r in v.reasons if r.severity != "reject"]
            for v in verdicts
            if v.verdict == "accept" and any(r.severity != "reject" for r in v.reasons)
        },
        screen_reused=reused,
    )
    return visit


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

    rootnames = field_types.unlabelled(_observations(ledger, visit), accepted)
    if not rootnames:
        return None
    label, reused = field_types.classify_visit_pixels(
        files, accepted, data_root=settings.data_root, visit=visit, redo=redo
    )
    log.info(
        "visit %s: field type from the image for %d exposure(s): %s", visit, len(rootnames), label.describe()
    )
    with _session(settings, run_id=run_id) as session:
        record_field_types(session, {rootname: label for rootname in rootnames})
    return field_types.ledger_entry(label, rootnames, reused=reused)


# ----------------------------------------------------------------------------- truth
def build_visit_truth(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
    """Align and drizzle each truth set of a visit; record alignment and per-exposure truth.

    Parameters
    ----------
    settings
        Effective settings (instrument profile, data root, database).
    run_id
        Pipeline run id.
    visit
        Visit id.
    redo
        ``False``: a truth set whose recorded truth (``<data_root>/outputs/truth/<visit>.json``)
        was made from the same files (checksums), profile and crlib version, and whose
        ``<rootname>_crtruth.fits`` files are unchanged since, is not aligned or drizzled again;
        its recorded alignment and truth rows are recorded again (idempotent upsert). ``True``:
        align and drizzle every set.

    Returns
    -------
    str
        ``visit``. The ledger lists the truth files, their statuses, and which exposures' truth
        was reused (``truth_reused``) rather than made by this run.
    """
    from crlib.align.visit import AlignOptions
    from crlib.errors import CrlibError
    from crlib.truth.visit import TruthOptions
    from crlib.truth.visit import build_visit_truth as build_truth

    ledger = RunLedger(settings.data_root, run_id)
    state = ledger.visit(visit)
    files: dict[str, str] = state.get("files", {})
    inputs = reuse.input_identity(state)
    outputs = reuse.StageOutputs(settings.data_root)
    previous = None if redo else outputs.read("truth", visit)
    truth_paths: dict[str, str] = {}
    statuses: dict[str, str] = {}
    reused: list[str] = []
    entries: list[dict[str, Any]] = []
    for index, members in enumerate(state.get("truth_sets", [])):
        member_inputs = {rootname: inputs.get(rootname) for rootname in sorted(members)}
        entry = reuse.reusable_truth_set(
            previous, members=members, inputs=member_inputs, profile=settings.instrument
        )
        if entry is not None:
            log.info(
                "visit %s set %d: reusing recorded truth of %d exposures (no alignment, no drizzle)",
                visit,
                index,
                len(members),
            )
            reused.extend(members)
        else:
            work = settings.data_root / "work" / run_key(visit) / f"set{index}"
            staged = work / "input" / visit
            staged.mkdir(parents=True, exist_ok=True)
            for old in staged.iterdir():
                old.unlink()
            for rootname in members:
                os.symlink(Path(files[rootname]).resolve(), staged / Path(files[rootname]).name)
            bug: Exception | None = None
            try:
                result = build_truth(
                    staged,
                    work_dir=work / "drizzle",
                    out_dir=work / "truth",
                    profile=settings.instrument,
                    options=TruthOptions(
                        workers=settings.threads, align_options=AlignOptions(workers=settings.threads)
                    ),
                )
            except CrlibError as exc:  # bad data of the set: a recorded outcome, the run goes on
                log.warning("visit %s set %d: no truth: %s", visit, index, exc)
                result = _failed_set(visit, members, f"{exc}".splitlines()[0])
            except Exception as exc:  # a bug: recorded on the exposures and in the ledger, then raised
                bug = exc
                result = _failed_set(visit, members, _record_error(ledger, visit, f"truth set {index}", exc))
            built = (
                dataclasses.replace(result.alignment, visit=visit) if result.alignment is not None else None
            )
            entry = {
                "members": sorted(members),
                "inputs": member_inputs,
                "profile": settings.instrument,
                "code": code_version(),
                "alignment": to_dict(built) if built is not None else None,
                "results": [to_dict(t) for t in result.exposures],
                "files": {t.rootname: reuse.file_fingerprint(t.path) for t in result.exposures if t.path},
                "seconds": result.seconds,
            }
            if bug is not None:
                _record_truth_set(
                    settings, run_id, None, [reuse.truth_from_dict(r) for r in entry["results"]]
                )
                ledger.update_visit(
                    visit,
                    truth_status={
                        **ledger.visit(visit).get("truth_status", {}),
                        **{t.rootname: t.status for t in result.exposures},
                    },
                )
                raise bug
        entries.append(entry)
        alignment = reuse.alignment_from_dict(entry["alignment"])
        truths = [reuse.truth_from_dict(row) for row in entry["results"]]
        _record_truth_set(settings, run_id, alignment, truths, filter_name=_set_filter(files, members))
        for truth in truths:
            statuses[truth.rootname] = truth.status
            if truth.path and truth.status != "failed":
                truth_paths[truth.rootname] = truth.path
    outputs.write("truth", visit, {"visit": visit, "sets": entries})
    ledger.update_visit(visit, truth=truth_paths, truth_status=statuses, truth_reused=sorted(reused))
    return visit


def _failed_set(visit: str, members: list[str], reason: str) -> Any:
    """A :class:`~crlib.truth.visit.VisitTruth` in which every member failed for ``reason``."""
    from crlib.truth.quality import failed_truth
    from crlib.truth.visit import VisitTruth

    failed = tuple(failed_truth(rootname, "drizzle", reason) for rootname in sorted(members))
    return VisitTruth(visit, "drizzle", None, failed, {}, Path(), Path())


def _set_filter(files: dict[str, str], members: list[str]) -> str:
    """A truth set's filter, from its first readable member's primary header (``''`` if none)."""
    from crlib.registry.serving import exposure_filter_of

    found = (exposure_filter_of(Path(files[rootname])) for rootname in sorted(members))
    return next((name for name in found if name), "")


def _record_truth_set(
    settings: Settings, run_id: str, alignment: Any, truths: list[Any], *, filter_name: str = ""
) -> None:
    from crlib.db.repo import record_alignment, record_truth

    with _session(settings, run_id=run_id) as session:
        if alignment is not None:
            record_alignment(session, alignment, filter_name=filter_name)
        for truth in truths:
            record_truth(session, truth)


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
    """Run the model on one exposure and record the prediction and its model version.

    Parameters
    ----------
    settings
        Effective settings (``inference_model``, tracking URI, device, threads).
    run_id
        Pipeline run id.
    rootname
        The exposure.
    model
        ``None`` (``CRLIB_INFERENCE_MODEL`` decides), ``champion``, ``challenger``, a registered
        version number, or ``deepcr`` (see :mod:`crlib.registry.serving`). Aliases are resolved
        on every call, so a promotion is used from the next exposure on; the loaded weights are
        cached per process.
    redo
        ``False``: an existing ``_crpred.fits`` written by the same model version (its provenance
        header) is reused, and its database row recorded if missing. ``True``: always predict.

    Returns
    -------
    str
        ``rootname``. A bad input file is recorded in the ledger with its reason; a model that
        cannot be resolved or loaded raises :class:`~crlib.errors.ModelError` (the task fails
        and is retried: it is not the exposure's fault).
    """
    from crlib.db.model_registry import has_prediction, record_model_version
    from crlib.db.repo import record_predictions
    from crlib.errors import CrlibError, ModelError
    from crlib.formats.prediction import prediction_path
    from crlib.model.exposure import predict_exposure
    from crlib.profiles import get_profile
    from crlib.registry.serving import (
        exposure_filter_of,
        load_inference_model,
        resolve_model_reference,
        reusable_prediction,
    )

    ledger = RunLedger(settings.data_root, run_id)
    path = Path(_visit_state_of(ledger, rootname)["files"][rootname])
    out_dir = settings.data_root / "predictions" / run_key(rootname[:6])
    profile = get_profile(settings.instrument)
    reference = resolve_model_reference(settings, model, filter_name=exposure_filter_of(path))
    prediction = None
    if not redo:
        prediction = reusable_prediction(
            prediction_path(out_dir, rootname), reference=reference, threshold=profile.threshold
        )
    reused = prediction is not None
    if prediction is None:
        loaded = load_inference_model(settings, reference)
        try:
            prediction = predict_exposure(
                path,
                out_dir=out_dir,
                model=loaded,
                device=settings.device,
                threads=settings.threads or None,
                expected_profile=profile,
            )
        except ModelError:
            raise  # not the exposure's fault: the task fails (and is retried)
        except CrlibError as exc:
            log.warning("%s: no prediction: %s", rootname, exc)
            ledger.update_exposure(rootname, prediction=None, prediction_error=str(exc).splitlines()[0])
            return rootname
        except Exception as exc:  # a bug: recorded on the exposure and in the ledger, then raised
            text = _record_error(ledger, rootname, "infer", exc)
            ledger.update_exposure(rootname, prediction=None, prediction_error=text)
            raise
    if prediction.status == "ok":
        with _session(settings, run_id=run_id) as session:
            record_model_version(
                session,
                model_name=reference.name,
                version=reference.version,
                source=reference.source,
                uri=reference.record_uri,
                mlflow_run_id=reference.run_id,
            )
            if not (
                reused
                and has_prediction(
                    session,
                    rootname=prediction.rootname,
                    model_name=prediction.model_name,
                    model_version=prediction.model_version,
                    code_version=prediction.code_version,
                )
            ):
                record_predictions(session, [prediction])
    ledger.update_exposure(
        rootname,
        prediction=prediction.path if prediction.status == "ok" else None,
        prediction_error=prediction.reason,
        model=f"{prediction.model_name}:{prediction.model_version}",
        model_source=reference.source,
        model_fallback=reference.fallback,
        reused_prediction=reused,
        seconds=prediction.seconds,
    )
    action = "reused" if reused else "predicted"
    log.info("%s: %s %s (%s)", rootname, action, reference.label, reference.reason)
    return rootname


def score_exposure(
    settings: Settings, *, run_id: str, rootname: str, model: str | None = None, redo: bool = True
) -> str:
    """Score a prediction against the exposure's truth; record metrics and CR statistics.

    Only the pixels the instrument profile's :class:`~crlib.profiles.ScoringRules` keep are
    scored (the deepCR-ACS/WFC paper's 128-px border, DQ-flagged pixels of the FLC left out), and
    the metrics record the rules, the truth status, method and gate reasons they rest on (the
    results database adds the split of the visit for the predicting model version). Suspect
    truth is scored and recorded as such: statistics leave it out unless asked.

    Parameters
    ----------
    settings
        Effective settings (instrument profile, database).
    run_id
        Pipeline run id.
    rootname
        The exposure.
    model
        Accepted for symmetry with :func:`infer_exposure`; the model scored is the one named in
        the prediction file.
    redo
        ``False``: reuse the metrics and CR statistics recorded for this exposure
        (``<data_root>/outputs/score/<rootname>.json``) when the prediction, truth and FLC files
        are the same, unchanged files they were computed from under the same scoring rules, and
        record them again (idempotent upsert). ``True``: score again.

    Returns
    -------
    str
        ``rootname``. An exposure without prediction or truth, or with unreadable files, is
        recorded in the ledger as not scored with the reason.
    """
    from crlib.db.repo import record_cr_statistics, record_metrics
    from crlib.errors import InputDataError
    from crlib.metrics.crstats import truth_cr_statistics
    from crlib.metrics.scoring import score_prediction_file
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
    image_label = visit_state.get("image_field_type") or {}
    field_type = (observation.field_type if observation else None) or (
        image_label.get("field_type") if rootname in image_label.get("exposures", ()) else None
    )
    exptime = (
        observation.exptime_s
        if observation and observation.exptime_s
        else _exptime_of(exposure["prediction"])
    )
    profile = get_profile(settings.instrument)
    rules = profile.scoring
    flc = visit_state.get("files", {}).get(rootname)
    identity = {
        "prediction": str(exposure["prediction"]),
        "prediction_file": reuse.file_fingerprint(exposure["prediction"]),
        "truth": str(truth_path),
        "truth_file": reuse.file_fingerprint(truth_path),
        "flc_file": reuse.file_fingerprint(flc) if flc and rules.exclude_dq else None,
        "scoring": dataclasses.asdict(rules),
        "field_type": field_type,
        "exptime_s": exptime,
        "profile": settings.instrument,
        "code": code_version(),
    }
    outputs = reuse.StageOutputs(settings.data_root)
    record = None if redo else outputs.matching("score", rootname, identity)
    reused = record is not None
    if record is not None:
        metrics = reuse.metrics_from_dict(record["metrics"])
        statistics = reuse.statistics_from_dicts(record["statistics"])
        log.info("%s: reusing recorded metrics", rootname)
    else:
        try:
            metrics, _ = score_prediction_file(
                Path(exposure["prediction"]),
                Path(truth_path),
                field_type=field_type,
                rules=rules,
                flc=Path(flc) if flc else None,
            )
            statistics = truth_cr_statistics(
                Path(truth_path), rootname=rootname, exptime_s=exptime, profile=profile
            )
        except (InputDataError, ValueError) as exc:  # unreadable products, no valid pixels, no EXPTIME
            log.warning("%s: not scored: %s", rootname, exc)
            ledger.update_exposure(rootname, scored=False, score_note=str(exc), score_failed=True)
            return rootname
        except Exception as exc:  # a bug: recorded on the exposure and in the ledger, then raised
            text = _record_error(ledger, rootname, "score", exc)
            ledger.update_exposure(rootname, scored=False, score_note=text, score_failed=True)
            raise
    # The truth the scores rest on, as the truth stage of this run left it (status, method, reasons).
    truth_sets = (outputs.read("truth", rootname[:6]) or {}).get("sets", [])
    truth = next(
        (
            row
            for entry in truth_sets
            for row in entry.get("results", [])
            if row.get("rootname") == rootname and row.get("path") == truth_path
        ),
        None,
    )
    truth_status = (truth or {}).get("status") or visit_state.get("truth_status", {}).get(rootname)
    if truth_status in ("ok", "suspect"):
        metrics = dataclasses.replace(
            metrics,
            truth_status=truth_status,
            truth_method=(truth or {}).get("method"),
            truth_reasons=tuple((truth or {}).get("reasons", ())),
        )
    else:  # the results database takes it from the recorded truth
        metrics = dataclasses.replace(metrics, truth_status=None, truth_method=None, truth_reasons=())
    if not reused:
        outputs.write(
            "score",
            rootname,
            {**identity, "metrics": to_dict(metrics), "statistics": [to_dict(s) for s in statistics]},
        )
    with _session(settings, run_id=run_id) as session:
        record_metrics(session, [metrics])
        record_cr_statistics(session, statistics)
    ledger.update_exposure(
        rootname,
        scored=True,
        tpr_at_fpr=metrics.tpr_at_fpr,
        field_type=field_type,
        score_reused=reused,
        scored_model=f"{metrics.model_name}:{metrics.model_version}",
        score_truth_status=metrics.truth_status,
    )
    return rootname


def _exptime_of(prediction_path: str | Path) -> float:
    """EXPTIME (s) from a prediction product's primary header, 0 when it has none (then not scored)."""
    from astropy.io import fits

    try:
        return float(fits.getval(prediction_path, "EXPTIME", ext=0))
    except (OSError, KeyError, ValueError):
        return 0.0


# ----------------------------------------------------------------------------- finish
def abort_run(settings: Settings, *, run_id: str, message: str) -> None:
    """Record a run as ``failed`` with ``message`` when it cannot go on (e.g. no model to load)."""
    from crlib.db.runs import finish_run as record_finish

    with _session(settings) as session:
        record_finish(session, run_id=run_id, status="failed", message=message)


def finish_run(settings: Settings, *, run_id: str, dag_id: str, advance_watermark: bool) -> dict[str, Any]:
    """Summarise the run, record its end and status, advance the watermark, refresh the statistics.

    Parameters
    ----------
    settings
        Effective settings (database).
    run_id
        Pipeline run id.
    dag_id
        The caller's DAG id (checked against the recorded one; logged).
    advance_watermark
        Nightly runs: move the archive watermark to the poll's upper bound, but only when every
        polled visit reached the screening stage (its verdicts are recorded); otherwise it stays,
        and the next poll finds the unrecorded visits again.

    Returns
    -------
    dict
        ``status`` (:func:`crlib.pipeline.outcome.run_outcome`: ``success``, ``partial``, ``failed``) and
        ``message``; counts of the run: visits, exposures, accepted, ``rejected`` (science rules,
        with reasons), ``failed`` (``{rootname: "stage: reason"}``: downloads, damaged files,
        predictions, scoring), ``errors`` (bugs), truth statuses, ``truth_new`` (truth made by
        this run with status ok/suspect, not reused), predictions, scored exposures,
        ``model_fallbacks`` (why shipped weights were used instead of a registered model), what
        was reused, the new watermark and the summaries' refresh times. The statistics
        summaries (``crlib stats``) are refreshed last, so they include this run.
    """
    from crlib.db.runs import finish_run as record_finish
    from crlib.db.stats import refresh_summaries
    from crlib.db.watermarks import DatabaseWatermarkStore
    from crlib.pipeline.outcome import run_summary

    ledger = RunLedger(settings.data_root, run_id)
    summary = run_summary(ledger, dag_id=dag_id)
    status, message = summary["status"], summary["message"]
    poll_state = ledger.poll()
    watermark = None
    with _database(settings) as sessions:
        with sessions() as session:
            record_finish(session, run_id=run_id, status=status, summary=summary, message=message)
        unrecorded = summary["visits_unrecorded"]
        if advance_watermark and poll_state and not unrecorded and poll_state.get("until_mjd") is not None:
            watermark = DatabaseWatermarkStore(sessions).advance(
                poll_state["source"], float(poll_state["until_mjd"])
            )
        with sessions() as session:
            refreshed = refresh_summaries(session, concurrently=True)
            session.commit()
    summary["watermark_mjd"] = watermark
    summary["summaries_refreshed_s"] = {view: round(seconds, 3) for view, seconds in refreshed.items()}
    ledger.write_summary(summary)
    log.log(
        logging.INFO if status == "success" else logging.WARNING,
        "run %s finished %s%s",
        run_id,
        status,
        f": {message}" if message else "",
    )
    return summary
