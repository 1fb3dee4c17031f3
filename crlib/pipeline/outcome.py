"""A run's outcome from its ledger: ``success``, ``partial`` or ``failed``, and its summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crlib.pipeline.ledger import RunLedger
from crlib.pipeline.state import ExposureState, VisitState


def _polled_visits(ledger: RunLedger) -> list[str]:
    return sorted({str(row["visit"]) for row in ledger.observations()})


def _exposure_count(visit_states: Iterable[VisitState]) -> int:
    """Exposures the run fetched or tried to (downloaded files plus failed downloads)."""
    return sum(len(s.files) + len(s.fetch_failed) for s in visit_states)


def run_outcome(ledger: RunLedger) -> tuple[str, str | None, dict[str, Any]]:
    """The run's status, a one-line message, and its per-exposure failures and errors.

    ``failed``: the poll did not complete, a visit never reached screening, or a stage hit an
    unexpected exception (a bug; ``errors``). ``partial``: everything ran, but some exposures
    failed: download failed, damaged file quarantined by screening, no prediction, scoring
    failed, or never predicted (its task did not finish). ``success`` otherwise. Exposures
    rejected by science rules (too short, wrong mode ...) and truth QA outcomes are expected
    results, not failures.

    Returns
    -------
    status, message, details
        ``details`` holds ``failed`` (``{rootname: "stage: reason"}``), ``errors``
        (``{visit or rootname: text}``) and ``visits_unrecorded``.
    """
    visit_states = dict(ledger.visits())
    exposures = dict(ledger.exposures())
    polled = _polled_visits(ledger)
    unrecorded = [v for v in polled if v not in visit_states or not visit_states[v].screened]
    errors = ledger.errors()
    failed: dict[str, str] = {}
    for state in visit_states.values():
        failed.update({r: f"fetch: {r}: download failed: {why}" for r, why in state.fetch_failed.items()})
        failed.update({r: f"screen: {why}" for r, why in state.quarantined.items()})
        for rootname in state.accepted or []:
            exposure = exposures.get(rootname) or ExposureState(rootname)
            if exposure.prediction_error:
                failed[rootname] = f"infer: {exposure.prediction_error}"
            elif exposure.score_failed:
                failed[rootname] = f"score: {exposure.score_note}"
            elif not exposure.prediction:
                failed[rootname] = "infer: never predicted (its task did not finish)"
    details = {"failed": failed, "errors": errors, "visits_unrecorded": unrecorded}
    if not ledger.poll():
        return "failed", errors.get("poll", "the poll did not complete (see the poll task's log)"), details
    if errors or unrecorded:
        parts = []
        if errors:
            parts.append(f"{len(errors)} internal error(s): " + "; ".join(list(errors.values())[:3]))
        if unrecorded:
            parts.append(f"visit(s) {', '.join(unrecorded)} never reached screening")
        return "failed", "; ".join(parts), details
    if failed:
        stages_hit: dict[str, int] = {}
        for why in failed.values():
            stage = why.split(":", 1)[0]
            stages_hit[stage] = stages_hit.get(stage, 0) + 1
        total = _exposure_count(visit_states.values())
        counts = ", ".join(f"{n} at {stage}" for stage, n in sorted(stages_hit.items()))
        return "partial", f"{len(failed)} of {total} exposure(s) failed ({counts})", details
    return "success", None, details


def run_summary(ledger: RunLedger, *, dag_id: str) -> dict[str, Any]:
    """The run's summary from its ledger (see :func:`crlib.pipeline.stages.finish_run`)."""
    status, message, details = run_outcome(ledger)
    visit_states = dict(ledger.visits())
    exposures = dict(ledger.exposures())
    quarantined = {r for s in visit_states.values() for r in s.quarantined}
    summary: dict[str, Any] = {
        "status": status,
        "message": message,
        "dag_id": dag_id,
        "visits": len(_polled_visits(ledger)),
        "visits_unrecorded": details["visits_unrecorded"],
        "exposures": _exposure_count(visit_states.values()),
        "accepted": sum(len(s.accepted or []) for s in visit_states.values()),
        "rejected": {
            r: why for s in visit_states.values() for r, why in s.rejected.items() if r not in quarantined
        },
        "failed": details["failed"],
        "errors": details["errors"],
        "truth": {r: st for s in visit_states.values() for r, st in s.truth_status.items()},
        "predicted": sum(1 for e in exposures.values() if e.prediction),
        "scored": sum(1 for e in exposures.values() if e.scored),
        "model_fallbacks": sorted({e.model_fallback for e in exposures.values() if e.model_fallback}),
        "truth_new": sum(
            1
            for s in visit_states.values()
            for r, st in s.truth_status.items()
            if st != "failed" and r not in s.truth_reused
        ),
        "reused": {
            "fetch": sum(len(s.fetch_reused) for s in visit_states.values()),
            "screen": sum(1 for s in visit_states.values() if s.screen_reused),
            "truth": sum(len(s.truth_reused) for s in visit_states.values()),
            "infer": sum(1 for e in exposures.values() if e.reused_prediction),
            "score": sum(1 for e in exposures.values() if e.score_reused),
        },
    }
    return summary
