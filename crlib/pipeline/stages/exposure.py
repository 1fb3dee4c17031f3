"""The exposure stages: list the accepted exposures, infer (predict) and score each one."""

from __future__ import annotations

import dataclasses
import logging
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
    from crlib.pipeline.state import ExposureState, VisitState
    from crlib.profiles import InstrumentProfile
    from crlib.records import CrStatistics, ExposureMetrics, PredictionResult
    from crlib.registry.serving import ModelReference

log = logging.getLogger(__name__)


def list_exposures(settings: Settings, *, run_id: str, visits: list[str]) -> list[str]:
    """Accepted exposures of every visit the run screened (whatever happened to its truth).

    Parameters
    ----------
    settings
        Effective settings (data root).
    run_id
        Pipeline run id.
    visits
        The visits the truth tasks handed on (unused: every screened visit of the run counts).

    Returns
    -------
    list of str
        Rootnames, sorted.
    """
    ledger = RunLedger(settings.data_root, run_id)
    rootnames: list[str] = []
    for _, state in ledger.visits():
        rootnames.extend(state.accepted or [])
    return sorted(rootnames)


def _visit_state_of(ledger: RunLedger, rootname: str) -> VisitState:
    return ledger.visit(rootname[:6])


# ----------------------------------------------------------------------------- infer
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
    path = Path(_visit_state_of(ledger, rootname).files[rootname])
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
        prediction = support.quarantined_call(
            lambda: predict_exposure(
                path,
                out_dir=out_dir,
                model=loaded,
                device=settings.device,
                precision=settings.inference_precision,
                threads=settings.threads or None,
                expected_profile=profile,
            ),
            ledger=ledger,
            key=rootname,
            stage="infer",
            outcome="no prediction",
            expected=(CrlibError,),
            passthrough=(ModelError,),  # not the exposure's fault: the task fails (and is retried)
            on_failure=lambda text: ledger.update_exposure(
                rootname, prediction=None, prediction_error=(text.splitlines() or [""])[0]
            ),
        )
        if prediction is None:
            return rootname
    if prediction.status == "ok":
        _record_prediction(settings, run_id, prediction, reference, reused=reused)
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


def _record_prediction(
    settings: Settings, run_id: str, prediction: PredictionResult, reference: ModelReference, *, reused: bool
) -> None:
    """Record the model version and the prediction (a reused one only if its row is missing)."""
    from crlib.db.model_registry import has_prediction, record_model_version
    from crlib.db.repo import record_predictions

    with results_session(settings, run_id=run_id) as session:
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


# ----------------------------------------------------------------------------- score
@dataclasses.dataclass(frozen=True)
class _ScoreInputs:
    """What scoring one exposure reads: its files, labels, and the identity of its record."""

    prediction: str
    truth: str
    flc: str | None
    field_type: str | None
    exptime_s: float
    identity: dict[str, Any]


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
    from crlib.profiles import get_profile

    ledger = RunLedger(settings.data_root, run_id)
    exposure = ledger.exposure(rootname)
    visit_state = _visit_state_of(ledger, rootname)
    truth_path = visit_state.truth.get(rootname)
    if not exposure.prediction or not truth_path:
        ledger.update_exposure(
            rootname, scored=False, score_note="no prediction" if truth_path else "no truth"
        )
        return rootname
    profile = get_profile(settings.instrument)
    inputs = _score_inputs(settings, ledger, exposure, visit_state, exposure.prediction, truth_path, profile)
    outputs = reuse.StageOutputs(settings.data_root)
    record = None if redo else outputs.matching("score", rootname, inputs.identity)
    reused = record is not None
    if record is not None:
        metrics = reuse.metrics_from_dict(record["metrics"])
        statistics = reuse.statistics_from_dicts(record["statistics"])
        log.info("%s: reusing recorded metrics", rootname)
    else:
        scored = support.quarantined_call(
            lambda: _score(rootname, inputs, profile),
            ledger=ledger,
            key=rootname,
            stage="score",
            outcome="not scored",
            # unreadable products, no valid pixels, no EXPTIME
            expected=(InputDataError, ValueError),
            on_failure=lambda text: ledger.update_exposure(
                rootname, scored=False, score_note=text, score_failed=True
            ),
        )
        if scored is None:
            return rootname
        metrics, statistics = scored
    metrics = _with_truth_status(metrics, outputs, rootname, truth_path, visit_state)
    if not reused:
        outputs.write(
            "score",
            rootname,
            {**inputs.identity, "metrics": to_dict(metrics), "statistics": [to_dict(s) for s in statistics]},
        )
    with results_session(settings, run_id=run_id) as session:
        record_metrics(session, [metrics])
        record_cr_statistics(session, statistics)
    ledger.update_exposure(
        rootname,
        scored=True,
        tpr_at_fpr=metrics.tpr_at_fpr,
        field_type=inputs.field_type,
        score_reused=reused,
        scored_model=f"{metrics.model_name}:{metrics.model_version}",
        score_truth_status=metrics.truth_status,
    )
    return rootname


def _score_inputs(
    settings: Settings,
    ledger: RunLedger,
    exposure: ExposureState,
    visit_state: VisitState,
    prediction: str,
    truth: str,
    profile: InstrumentProfile,
) -> _ScoreInputs:
    """The exposure's field type (metadata, else the image's label), EXPTIME, FLC and identity."""
    rootname = exposure.rootname
    observation = next(
        (o for o in support.observations(ledger, rootname[:6]) if o.rootname == rootname), None
    )
    image_label = visit_state.image_field_type or {}
    field_type = (observation.field_type if observation else None) or (
        image_label.get("field_type") if rootname in image_label.get("exposures", ()) else None
    )
    exptime = observation.exptime_s if observation and observation.exptime_s else _exptime_of(prediction)
    rules = profile.scoring
    flc = visit_state.files.get(rootname)
    identity = {
        "prediction": str(prediction),
        "prediction_file": reuse.file_fingerprint(prediction),
        "truth": str(truth),
        "truth_file": reuse.file_fingerprint(truth),
        "flc_file": reuse.file_fingerprint(flc) if flc and rules.exclude_dq else None,
        "scoring": dataclasses.asdict(rules),
        "field_type": field_type,
        "exptime_s": exptime,
        "profile": settings.instrument,
        "code": code_version(),
    }
    return _ScoreInputs(prediction, truth, flc, field_type, exptime, identity)


def _score(
    rootname: str, inputs: _ScoreInputs, profile: InstrumentProfile
) -> tuple[ExposureMetrics, list[CrStatistics]]:
    """Metrics of the prediction against the truth, and the truth's CR statistics."""
    from crlib.metrics.crstats import truth_cr_statistics
    from crlib.metrics.scoring import score_prediction_file

    metrics, _ = score_prediction_file(
        Path(inputs.prediction),
        Path(inputs.truth),
        field_type=inputs.field_type,
        rules=profile.scoring,
        flc=Path(inputs.flc) if inputs.flc else None,
    )
    statistics = truth_cr_statistics(
        Path(inputs.truth), rootname=rootname, exptime_s=inputs.exptime_s, profile=profile
    )
    return metrics, statistics


def _with_truth_status(
    metrics: ExposureMetrics,
    outputs: reuse.StageOutputs,
    rootname: str,
    truth_path: str,
    visit_state: VisitState,
) -> ExposureMetrics:
    """The metrics with the truth they rest on, as the truth stage of this run left it.

    Status, method and reasons for ``ok``/``suspect`` truth; otherwise none (the results database
    takes them from the recorded truth).
    """
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
    truth_status = (truth or {}).get("status") or visit_state.truth_status.get(rootname)
    if truth_status in ("ok", "suspect"):
        return dataclasses.replace(
            metrics,
            truth_status=truth_status,
            truth_method=(truth or {}).get("method"),
            truth_reasons=tuple((truth or {}).get("reasons", ())),
        )
    return dataclasses.replace(metrics, truth_status=None, truth_method=None, truth_reasons=())


def _exptime_of(prediction_path: str | Path) -> float:
    """EXPTIME (s) from a prediction product's primary header, 0 when it has none (then not scored)."""
    from astropy.io import fits

    try:
        return float(fits.getval(prediction_path, "EXPTIME", ext=0))
    except (OSError, KeyError, ValueError):
        return 0.0
