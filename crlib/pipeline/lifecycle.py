"""The model lifecycle as tasks: is there enough new truth, train a challenger, run the promotion gate.

These are the functions the ``crlib_retrain`` and ``crlib_promote_model`` DAGs call, and the same
ones ``crlib train`` and ``crlib promote`` call; each returns JSON-friendly values for XCom.

"New truth" (:func:`count_new_truth`) is recorded truth with status ``ok`` on exposures of at least
100 s (the training rule) that the *last training run* did not use. The last training run is the
newest ``FINISHED`` MLflow run of experiment ``crlib-train-<instrument>`` (MLflow is the system of
record for training), and the exposures it used are read from its logged dataset manifest
(``dataset/manifest.json``); if the manifest cannot be read, truth recorded after the run started
counts as new. With no training run yet, every eligible exposure is new (the bootstrap champion,
deepCR's shipped weights, never saw this archive).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.config import Settings
from crlib.errors import ConfigError
from crlib.pipeline.database import results_database, results_session

if TYPE_CHECKING:
    from crlib.registry.promotion import GateThresholds
    from crlib.registry.retraining import InitialModel, TrainingRequest, TrainingRunResult
    from crlib.registry.versions import RegisteredVersion
    from crlib.training.sources import TrainingExposure
    from crlib.training.trainer import TrainingProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewTruth:
    """How much usable truth the last training run has not seen.

    Attributes
    ----------
    eligible
        Exposures with truth status ``ok`` and exposure time >= 100 s in the results database.
    new
        Of those, the ones the last training run did not use.
    threshold
        ``Settings.retrain_min_new_exposures``.
    last_run_id
        MLflow id of the last finished training run (``None``: never trained).
    last_run_started
        When it started (UTC).
    basis
        ``no training run``, ``dataset manifest`` or ``recorded after run start``.
    """

    eligible: int
    new: int
    threshold: int
    last_run_id: str | None
    last_run_started: dt.datetime | None
    basis: str

    @property
    def enough(self) -> bool:
        """Whether ``new`` reaches the threshold."""
        return self.new >= self.threshold


def count_new_truth(settings: Settings) -> NewTruth:
    """Count eligible truth the last training run did not use (see the module docstring).

    Parameters
    ----------
    settings
        Results database, tracking URI, instrument, ``retrain_min_new_exposures``.
    """
    from sqlalchemy import select

    from crlib.db.orm import Exposure, TruthResultRow
    from crlib.training.sources import MIN_EXPTIME_S

    last = _last_training_run(settings)
    with results_session(settings, upgrade=True) as session:
        rows = session.execute(
            select(TruthResultRow.rootname, TruthResultRow.recorded_at)
            .join(Exposure, Exposure.rootname == TruthResultRow.rootname)
            .where(
                TruthResultRow.status == "ok",
                TruthResultRow.path.is_not(None),
                Exposure.exptime_s >= MIN_EXPTIME_S,
            )
        ).all()
    first_recorded: dict[str, dt.datetime] = {}
    for rootname, recorded_at in rows:  # several methods per exposure: the earliest counts
        if rootname not in first_recorded or recorded_at < first_recorded[rootname]:
            first_recorded[rootname] = recorded_at
    if last is None:
        new, basis, run_id, started = len(first_recorded), "no training run", None, None
    else:
        run_id, started, used = last
        if used is not None:
            new, basis = len(set(first_recorded) - used), "dataset manifest"
        else:
            new = sum(1 for at in first_recorded.values() if at > started)
            basis = "recorded after run start"
    return NewTruth(
        eligible=len(first_recorded),
        new=new,
        threshold=settings.retrain_min_new_exposures,
        last_run_id=run_id,
        last_run_started=started,
        basis=basis,
    )


def enough_new_truth(settings: Settings) -> bool:
    """Whether enough new truth has accumulated to retrain (``CRLIB_RETRAIN_MIN_NEW_EXPOSURES``).

    Logs the numbers: eligible exposures, new ones, the threshold and the last training run.
    """
    counted = count_new_truth(settings)
    log.info(
        "new truth: %d of %d eligible exposures (truth ok, >= 100 s) not used by %s (%s); threshold %d -> %s",
        counted.new,
        counted.eligible,
        f"training run {counted.last_run_id} of {counted.last_run_started:%Y-%m-%d %H:%M UTC}"
        if counted.last_run_id and counted.last_run_started
        else "any training run",
        counted.basis,
        counted.threshold,
        "retrain" if counted.enough else "skip",
    )
    return counted.enough


def training_request(
    settings: Settings,
    *,
    initial: InitialModel = "champion",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    hidden: int = 32,
    patch: int = 256,
    border: int | None = None,
    seed: int = 0,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
    max_patches_per_epoch: int | None = None,
    device: str | None = None,
) -> TrainingRequest:
    """The training request of the settings' training defaults, with explicit values winning.

    Parameters
    ----------
    settings
        ``train_*`` defaults, instrument, device.
    initial
        ``champion`` (fine-tune the registered champion), ``deepcr`` or ``scratch``.
    epochs, batch_size, lr, max_patches_per_epoch
        Override ``CRLIB_TRAIN_*``; ``lr`` defaults to 0.005 when training from scratch.
    hidden
        Width of a network trained from scratch.
    patch, border
        Patch edge and discarded chip border, pixels (border default: the instrument profile's
        scoring rules, as pipeline scoring and the promotion gate use).
    seed
        Random seed (patch order, augmentation; the splits are a hash of each field, not seeded).
    validation_fraction, test_fraction
        Override ``CRLIB_TRAIN_VALIDATION_FRACTION`` / ``CRLIB_TRAIN_TEST_FRACTION``.
    device
        ``auto``, ``cpu`` or ``cuda`` (default ``CRLIB_DEVICE``).

    Raises
    ------
    ConfigError
        Odd patch size, fractions leaving no training visits, or an unavailable device.
    """
    from crlib.profiles import get_profile
    from crlib.registry.retraining import TrainingRequest
    from crlib.training.patches import PatchParameters
    from crlib.training.splits import SplitFractions
    from crlib.training.trainer import TrainingConfig

    if patch % 2:
        raise ConfigError(f"patch size must be even, got {patch}")
    validation = settings.train_validation_fraction if validation_fraction is None else validation_fraction
    test = settings.train_test_fraction if test_fraction is None else test_fraction
    if validation + test >= 1.0:
        raise ConfigError("validation + test fractions must leave visits for training")
    default_lr = 0.005 if initial == "scratch" else settings.train_lr
    config = TrainingConfig(
        epochs=epochs or settings.train_epochs,
        batch_size=batch_size or settings.train_batch_size,
        lr=lr if lr is not None else default_lr,
        seed=seed,
        device=torch_device(device or settings.device),
        max_patches_per_epoch=max_patches_per_epoch or settings.train_max_patches_per_epoch,
    )
    return TrainingRequest(
        instrument=settings.instrument,
        initial=initial,
        config=config,
        hidden=hidden,
        patches=PatchParameters.for_profile(get_profile(settings.instrument), patch=patch, border=border),
        fractions=SplitFractions(1.0 - validation - test, validation, test),
    )


def train_challenger(
    settings: Settings,
    *,
    run_id: str,
    request: TrainingRequest | None = None,
    exposures: Sequence[TrainingExposure] | None = None,
    record: bool = True,
    progress: Callable[[TrainingProgress], None] | None = None,
) -> dict[str, Any]:
    """Retrain on recorded truth and register the result as the ``challenger``.

    Parameters
    ----------
    settings
        Results database, tracking URI, data root (``<data_root>/training``), training defaults.
    run_id
        The Airflow/CLI run asking for it (tagged on the MLflow run as ``crlib.pipeline_run_id``).
    request
        What to train (default: :func:`training_request` of the settings, fine-tuning the
        champion; the registry is bootstrapped with deepCR's weights first if empty).
    exposures
        Training exposures (default: from the results database, truth status ``ok`` only,
        exposures >= 100 s, files present on disk).
    record
        Record the new version (source ``mlflow``) and its ``challenger`` alias in the results
        database.
    progress
        Per-step callback (the CLI's progress bar).

    Returns
    -------
    dict
        JSON-friendly summary: MLflow ``run_id``, ``model_name``, ``version`` (number) and
        ``label``, ``initial`` model, dataset id and patch counts, ``patches_per_second``, and
        ``tpr`` per field type/filter for the trained and the initial model (percent, ``None``
        where undefined).

    Raises
    ------
    InputDataError
        No usable training exposures.
    """
    import torch

    from crlib.registry.retraining import run_training
    from crlib.registry.versions import bootstrap_registry

    request = request or training_request(settings)
    tracking_uri = settings.resolved_mlflow_uri()
    already = _version_of_pipeline_run(tracking_uri, request.instrument, run_id)
    if already is not None:
        # a retried task whose first attempt registered the challenger and then failed
        log.warning(
            "run %s already registered %s (MLflow run %s); not training again",
            run_id,
            already.label,
            already.run_id,
        )
        return {
            "run_id": already.run_id,
            "model_name": already.name,
            "version": already.version,
            "label": already.label,
            "pipeline_run_id": run_id,
            "reused": True,
        }
    if exposures is None:
        exposures = _database_exposures(settings)
    log.info("run %s: training on %d exposures from %s", run_id, len(exposures), request.initial)
    if request.initial == "champion":
        bootstrap_registry(tracking_uri, instrument=request.instrument)
    torch.set_num_threads(settings.torch_threads())
    result = run_training(
        exposures,
        tracking_uri=tracking_uri,
        work_dir=settings.data_root / "training",
        request=request,
        progress=progress,
        tags={PIPELINE_RUN_TAG: run_id},
    )
    if record and result.version is not None:
        _record_challenger(settings, result, tracking_uri)
    summary = training_summary(result)
    summary["pipeline_run_id"] = run_id
    log.info(
        "run %s: registered %s as challenger (%.1f patches/s)",
        run_id,
        summary["label"],
        summary["patches_per_second"],
    )
    return summary


def training_summary(result: TrainingRunResult) -> dict[str, Any]:
    """JSON-friendly summary of a training run (see :func:`train_challenger`)."""
    version = result.version
    tpr: dict[str, dict[str, dict[str, float | None]]] = {}
    for label, report in (("trained", result.test_report), ("initial", result.initial_report)):
        for group in report.groups:
            numbers = {fpr: _percent(v) for fpr, v in group.tpr.items()}
            numbers |= {f"{fpr}_dilated": _percent(v) for fpr, v in group.tpr_dilated.items()}
            tpr.setdefault(group.key, {})[label] = numbers
    return {
        "run_id": result.run_id,
        "model_name": version.name if version else None,
        "version": version.version if version else None,
        "label": version.label if version else None,
        "initial": result.initial_label,
        "dataset_id": result.dataset.dataset_id,
        "dataset": str(result.dataset.directory),
        "exposures": len(result.dataset.manifest.get("exposures", [])),
        "visits": len(result.dataset.manifest.get("visits", {})),
        "patches_per_split": dict(result.dataset.manifest.get("patches_per_split", {})),
        "patches_per_second": round(result.patches_per_second, 3),
        "epochs": [
            {
                "epoch": r.epoch,
                "train_loss": _finite(r.train_loss),
                "validation_loss": _finite(r.validation_loss),
                "seconds": round(r.seconds, 3),
            }
            for r in result.history
        ],
        "tpr": tpr,
    }


def promote_model(
    settings: Settings,
    *,
    model_name: str | None = None,
    version: str = "challenger",
    dry_run: bool = False,
    run_id: str | None = None,
    dataset: Path | None = None,
    thresholds: GateThresholds | None = None,
    device: str | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """Run the promotion gate for ``version`` against the champion and record the decision.

    Parameters
    ----------
    settings
        Tracking URI, results database, gate thresholds (``CRLIB_GATE_*``), device.
    model_name
        Registered model (default: the instrument's, e.g. ``deepcr-acs-wfc``).
    version
        ``challenger`` or a version number.
    dry_run
        Decide and record, but move no alias.
    run_id
        The Airflow/CLI run asking (stored with the decision).
    dataset
        Patch dataset whose test split is scored (default: the one the candidate was trained on,
        its ``crlib.dataset_dir`` tag; its test split is the fixed held-out set).
    thresholds
        Gate thresholds (default: from the settings).
    device
        Torch device for scoring (default ``CRLIB_DEVICE``).
    record
        Record the decision in the results database (every decision, dry runs and refusals too).

    Returns
    -------
    dict
        The decision's numbers (:meth:`~crlib.registry.promotion.PromotionDecision.to_json`, NaN
        as ``None``) plus ``outcome``, the ``failed`` comparisons, the ``champion`` version after
        the decision, the ``dataset`` directory and ``run_id``.

    Raises
    ------
    ConfigError
        Unknown model name, or no dataset recorded for the candidate.
    ModelError
        Unknown version/alias.
    """
    from crlib.registry.promotion import GateThresholds, promote
    from crlib.registry.versions import CHAMPION, REGISTERED_MODEL_NAMES, get_version, registered_model_name
    from crlib.training.patches import open_patch_dataset

    name = model_name or registered_model_name(settings.instrument)
    if name not in REGISTERED_MODEL_NAMES.values():
        raise ConfigError(
            f"unknown registered model {name!r}; known: {sorted(REGISTERED_MODEL_NAMES.values())}"
        )
    tracking_uri = settings.resolved_mlflow_uri()
    if dataset is None:
        tag = get_version(tracking_uri, name, version).tags.get("crlib.dataset_dir")
        if not tag:
            raise ConfigError(
                f"{name} {version} has no recorded patch dataset (tag crlib.dataset_dir); "
                "pass the dataset directory (crlib promote --dataset)"
            )
        dataset = Path(tag)
    thresholds = thresholds or GateThresholds(
        max_drop_points=settings.gate_max_drop_points,
        min_mean_gain_points=settings.gate_min_mean_gain_points,
    )
    with ExitStack() as stack:
        recorder = None
        if record:
            from crlib.registry.decisions import database_recorder

            sessions = stack.enter_context(results_database(settings, upgrade=True))
            recorder = database_recorder(sessions, tracking_uri=tracking_uri, run_id=run_id)
        decision = promote(
            tracking_uri,
            model_name=name,
            dataset=open_patch_dataset(dataset),
            challenger=version,
            thresholds=thresholds,
            dry_run=dry_run,
            device=torch_device(device or settings.device),
            recorder=recorder,
        )
    summary = _json_numbers(decision.to_json())
    summary |= {
        "outcome": decision.outcome,
        "failed": [_json_numbers(asdict(c)) for c in decision.failed()],
        "champion": get_version(tracking_uri, name, CHAMPION).version,
        "dataset": str(dataset),
        "run_id": run_id,
    }
    (log.info if decision.promoted else log.warning)(
        "%s v%s: %s (mean %s points)%s",
        name,
        decision.challenger_version,
        decision.outcome,
        summary["mean_delta_points"],
        "" if decision.promoted else ": " + "; ".join(decision.reasons),
    )
    return summary


def torch_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``/``cuda`` checked.

    Raises
    ------
    ConfigError
        ``cuda`` without a CUDA device, or an unknown name.
    """
    from crlib.model.inference import resolve_device

    return resolve_device(choice).type


# ----------------------------------------------------------------------------- internals
def _database_exposures(settings: Settings) -> list[TrainingExposure]:
    from crlib.training.sources import exposures_from_database

    with results_session(settings, upgrade=True) as session:
        return exposures_from_database(session)


#: Tag on the MLflow training run and its registered version naming the pipeline run behind it.
PIPELINE_RUN_TAG = "crlib.pipeline_run_id"


def _version_of_pipeline_run(tracking_uri: str, instrument: str, run_id: str) -> RegisteredVersion | None:
    """The version a pipeline run already registered, if any (makes retried training tasks idempotent)."""
    from crlib.registry.versions import list_versions, registered_model_exists, registered_model_name

    name = registered_model_name(instrument)
    if not registered_model_exists(tracking_uri, name):
        return None
    found = [v for v in list_versions(tracking_uri, name) if v.tags.get(PIPELINE_RUN_TAG) == run_id]
    return max(found, key=lambda v: int(v.version)) if found else None


def _record_challenger(settings: Settings, result: TrainingRunResult, tracking_uri: str) -> None:
    from crlib.db.model_registry import record_alias, record_model_version
    from crlib.db.training_splits import record_training_splits
    from crlib.registry.provenance import version_splits
    from crlib.registry.versions import CHALLENGER

    version = result.version
    assert version is not None
    with results_session(settings, upgrade=True) as session:
        record_model_version(
            session,
            model_name=version.name,
            version=version.version,
            source="mlflow",
            uri=f"{version.uri} @ {tracking_uri}"[:1024],
            mlflow_run_id=result.run_id,
            description=f"trained from {result.initial_label} on dataset {result.dataset.dataset_id}",
        )
        # the version's training manifest, combined with its starting versions' (what they trained
        # on it has seen too): its scores on these visits are labelled in-sample
        chain = version_splits(tracking_uri, version)
        record_training_splits(
            session,
            model_name=version.name,
            version=version.version,
            splits=chain.splits
            if chain is not None
            else {visit: entry["split"] for visit, entry in result.dataset.manifest["visits"].items()},
            dataset_id=chain.dataset_id if chain is not None else result.dataset.dataset_id,
        )
        record_alias(
            session,
            model_name=version.name,
            alias=CHALLENGER,
            version=version.version,
            reason=f"trained by MLflow run {result.run_id}",
        )
        session.commit()


def _last_training_run(settings: Settings) -> tuple[str, dt.datetime, set[str] | None] | None:
    """``(run id, start time, rootnames used or None)`` of the newest finished training run."""
    from crlib.registry.tracking import EXPERIMENT_PREFIX, local_store_path

    tracking_uri = settings.resolved_mlflow_uri()
    local = local_store_path(tracking_uri)
    if local is not None and not local.exists():
        return None
    from crlib.registry.tracking import mlflow_client

    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(f"{EXPERIMENT_PREFIX}{settings.instrument}")
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000.0, tz=dt.UTC)
    return run.info.run_id, started, _manifest_rootnames(tracking_uri, run.info.run_id)


def _manifest_rootnames(tracking_uri: str, run_id: str) -> set[str] | None:
    """Rootnames in a training run's logged dataset manifest (``None`` if it cannot be read)."""
    import mlflow
    from crlib.registry.tracking import active_tracking

    try:
        with active_tracking(tracking_uri):
            manifest = mlflow.artifacts.load_dict(f"runs:/{run_id}/dataset/manifest.json")
        return {str(e["rootname"]) for e in manifest["exposures"]}
    except Exception as exc:  # missing artifact, unreachable store: fall back to the run's start time
        log.warning("training run %s: dataset manifest unreadable (%s); counting by time", run_id, exc)
        return None


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else round(100.0 * value, 4)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _json_numbers(data: Any) -> Any:
    """Replace non-finite floats by ``None`` (XCom and strict JSON have no NaN)."""
    if isinstance(data, dict):
        return {k: _json_numbers(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_json_numbers(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data
