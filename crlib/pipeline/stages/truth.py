"""The truth stage: align and drizzle each truth set of a visit, record alignment and truth.

:func:`truth_stage` is the pipeline stage (ledger, reuse, results database); the work itself is
:func:`crlib.truth.visit.build_visit_truth`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.config import Settings
from crlib.pipeline import reuse
from crlib.pipeline.database import results_session
from crlib.pipeline.ledger import RunLedger, run_key
from crlib.pipeline.stages import support
from crlib.provenance import code_version
from crlib.records import to_dict

if TYPE_CHECKING:
    from crlib.records import AlignmentResult, TruthResult
    from crlib.truth.options import VisitTruth

log = logging.getLogger(__name__)


def truth_stage(settings: Settings, *, run_id: str, visit: str, redo: bool = True) -> str:
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
    ledger = RunLedger(settings.data_root, run_id)
    state = ledger.visit(visit)
    inputs = reuse.input_identity(state)
    outputs = reuse.StageOutputs(settings.data_root)
    previous = None if redo else outputs.read("truth", visit)
    truth_paths: dict[str, str] = {}
    statuses: dict[str, str] = {}
    reused: list[str] = []
    entries: list[dict[str, Any]] = []
    for index, members in enumerate(state.truth_sets):
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
            entry = _build_set(settings, run_id, ledger, visit, index, members, member_inputs, state.files)
        entries.append(entry)
        alignment = reuse.alignment_from_dict(entry["alignment"])
        truths = [reuse.truth_from_dict(row) for row in entry["results"]]
        _record_truth_set(settings, run_id, alignment, truths, filter_name=_set_filter(state.files, members))
        for truth in truths:
            statuses[truth.rootname] = truth.status
            if truth.path and truth.status != "failed":
                truth_paths[truth.rootname] = truth.path
    outputs.write("truth", visit, {"visit": visit, "sets": entries})
    ledger.update_visit(visit, truth=truth_paths, truth_status=statuses, truth_reused=sorted(reused))
    return visit


def _build_set(
    settings: Settings,
    run_id: str,
    ledger: RunLedger,
    visit: str,
    index: int,
    members: list[str],
    member_inputs: dict[str, Any],
    files: dict[str, str],
) -> dict[str, Any]:
    """Align and drizzle one truth set; its record (what :mod:`crlib.pipeline.reuse` keeps).

    Bad data of the set makes every member ``failed`` with the reason. A bug is recorded in the
    ledger and on the members (database and ledger ``truth_status``), then raised.
    """
    from crlib.align.options import AlignOptions
    from crlib.errors import CrlibError
    from crlib.truth.options import TruthOptions
    from crlib.truth.visit import build_visit_truth

    work = settings.data_root / "work" / run_key(visit) / f"set{index}"
    staged = work / "input" / visit
    staged.mkdir(parents=True, exist_ok=True)
    for old in staged.iterdir():
        old.unlink()
    for rootname in members:
        os.symlink(Path(files[rootname]).resolve(), staged / Path(files[rootname]).name)
    bug: Exception | None = None
    try:
        result = build_visit_truth(
            staged,
            work_dir=work / "drizzle",
            out_dir=work / "truth",
            profile=settings.instrument,
            options=TruthOptions(
                workers=settings.threads,
                align_options=AlignOptions(workers=settings.threads),
                engine=settings.truth_engine,
                drizzle_processes=settings.truth_drizzle_processes,
            ),
        )
    except CrlibError as exc:  # bad data of the set: a recorded outcome, the run goes on
        log.warning("visit %s set %d: no truth: %s", visit, index, exc)
        result = _failed_set(visit, members, f"{exc}".splitlines()[0])
    except Exception as exc:  # a bug: recorded on the exposures and in the ledger, then raised
        bug = exc
        result = _failed_set(visit, members, support.record_error(ledger, visit, f"truth set {index}", exc))
    built = dataclasses.replace(result.alignment, visit=visit) if result.alignment is not None else None
    entry: dict[str, Any] = {
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
        _record_truth_set(settings, run_id, None, [reuse.truth_from_dict(r) for r in entry["results"]])
        ledger.update_visit(
            visit,
            truth_status={
                **ledger.visit(visit).truth_status,
                **{t.rootname: t.status for t in result.exposures},
            },
        )
        raise bug
    return entry


def _failed_set(visit: str, members: list[str], reason: str) -> VisitTruth:
    """A :class:`~crlib.truth.visit.VisitTruth` in which every member failed for ``reason``."""
    from crlib.truth.options import VisitTruth
    from crlib.truth.quality import failed_truth

    failed = tuple(failed_truth(rootname, "drizzle", reason) for rootname in sorted(members))
    return VisitTruth(visit, "drizzle", None, failed, {}, Path(), Path())


def _set_filter(files: dict[str, str], members: list[str]) -> str:
    """A truth set's filter, from its first readable member's primary header (``''`` if none)."""
    from crlib.registry.serving import exposure_filter_of

    found = (exposure_filter_of(Path(files[rootname])) for rootname in sorted(members))
    return next((name for name in found if name), "")


def _record_truth_set(
    settings: Settings,
    run_id: str,
    alignment: AlignmentResult | None,
    truths: list[TruthResult],
    *,
    filter_name: str = "",
) -> None:
    """Record a set's alignment (if any) and its members' truth in the results database."""
    from crlib.db.repo import record_alignment, record_truth

    with results_session(settings, run_id=run_id) as session:
        if alignment is not None:
            record_alignment(session, alignment, filter_name=filter_name)
        for truth in truths:
            record_truth(session, truth)
