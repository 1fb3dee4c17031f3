"""One retraining run end to end: patches -> train -> score -> MLflow run -> challenger version.

The run is logged in experiment ``crlib-train-<instrument>``: parameters, per-epoch metrics,
the dataset manifest, the test-split TPR table and ROC plots of the new model and of the model it
started from, then the new weights are registered (alias ``challenger``). Nothing is promoted
here: that is the gate's job (:func:`crlib.registry.promotion.promote`).

Runs are resumable: the checkpoint directory is derived from the dataset, the configuration and
the starting model, so running the same command again after a crash continues the same epoch
sequence and the same MLflow run.

The registered version records what the promotion gate checks
(:mod:`crlib.registry.provenance`): ``crlib.training_manifest`` (the logged dataset manifest:
every visit, its split and field), ``crlib.initial`` (the model training started from) and
``crlib.truth_source`` (``real``, ``simulator`` or ``mixed``: decided from the training files'
simulator markers, :func:`crlib.training.sources.is_simulated_exposure`, and inherited from the
starting model), with ``crlib.simulated_exposures`` (``k/n``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from crlib.errors import ConfigError, InputDataError
from crlib.model.package import ModelMetadata, write_package
from crlib.registry.tracking import EXPERIMENT_PREFIX, active_tracking, experiment_id, mlflow_client
from crlib.registry.versions import (
    CHALLENGER,
    CHAMPION,
    MANIFEST_TAG,
    SCORING_TAG,
    TRUTH_SOURCE_TAG,
    RegisteredVersion,
    bootstrap_registry,
    load_registered_model,
    log_model_package,
    register_version,
    registered_model_name,
)
from crlib.training.evaluation import EvaluationReport, evaluate_network
from crlib.training.patches import PatchDataset, PatchParameters, build_patch_dataset, dataset_rules
from crlib.training.sources import TrainingExposure, truth_source_of
from crlib.training.splits import SplitFractions
from crlib.training.trainer import (
    EpochRecord,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
    train_network,
)

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

log = logging.getLogger(__name__)

InitialModel = Literal["champion", "deepcr", "scratch"]


@dataclass(frozen=True)
class TrainingRequest:
    """What to train.

    Attributes
    ----------
    instrument
        Instrument profile; selects the registered model name.
    initial
        Start from the registered ``champion``, deepCR's shipped weights (``deepcr``), or ``scratch``.
    config
        Hyper-parameters.
    hidden
        Width of a network trained from scratch (fine-tuning keeps the starting model's width).
    patches
        Patch cutting parameters; ``None`` (default): the instrument profile's scoring rules and
        saturation (:meth:`PatchParameters.for_profile`), as pipeline scoring and the gate use.
    fractions
        Split fractions per stratum of fields (proposal, target), see :mod:`crlib.training.splits`.
    register
        Register the result as a new version with alias ``challenger``.
    """

    instrument: str = "acs_wfc"
    initial: InitialModel = "champion"
    config: TrainingConfig = field(default_factory=TrainingConfig)
    hidden: int = 32
    patches: PatchParameters | None = None

    def patch_parameters(self) -> PatchParameters:
        """``patches``, or the instrument profile's (:meth:`PatchParameters.for_profile`)."""
        from crlib.profiles import get_profile

        return self.patches or PatchParameters.for_profile(get_profile(self.instrument))

    fractions: SplitFractions = field(default_factory=SplitFractions)
    register: bool = True


@dataclass(frozen=True)
class TrainingRunResult:
    """What a training run produced.

    Attributes
    ----------
    run_id
        MLflow run id.
    version
        The registered challenger (``None`` when ``register`` was off).
    dataset
        The patch dataset used.
    history
        Per-epoch records.
    patches_per_second
        Training throughput.
    test_report, initial_report
        Test-split scores of the trained model and of the model training started from.
    initial_label
        What training started from (``deepcr-acs-wfc/1``, ``deepCR ACS-WFC`` or ``scratch``).
    """

    run_id: str
    version: RegisteredVersion | None
    dataset: PatchDataset
    history: list[EpochRecord]
    patches_per_second: float
    test_report: EvaluationReport
    initial_report: EvaluationReport
    initial_label: str


def initial_model(
    request: TrainingRequest, *, tracking_uri: str
) -> tuple[torch.nn.Module, ModelMetadata, str]:
    """The starting network, its metadata, and a label for it."""
    from crlib.model.weights import SHIPPED_MODELS, load_shipped_model
    from crlib.profiles import get_profile

    profile = get_profile(request.instrument)
    spec = SHIPPED_MODELS[profile.deepcr_model]
    if request.initial == "champion":
        bootstrap_registry(tracking_uri, instrument=profile.name)
        uri = f"models:/{registered_model_name(profile.name)}@{CHAMPION}"
        network, version = load_registered_model(uri, tracking_uri=tracking_uri)
        assert version.metadata is not None
        return network, version.metadata, version.label
    base = ModelMetadata.of_shipped(spec, profile)
    if request.initial == "deepcr":
        shipped = load_shipped_model(spec.name)
        network = _copy_network(shipped.network)
        return network, base, f"deepCR {spec.name}"
    if request.initial == "scratch":
        from crlib.model.networks import UNet2

        torch.manual_seed(request.config.seed)
        from dataclasses import replace

        return (
            UNet2(spec.architecture, hidden=request.hidden),
            replace(base, hidden=request.hidden),
            "scratch",
        )
    raise ConfigError(f"unknown starting model {request.initial!r}; use champion, deepcr or scratch")


def _copy_network(network: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(network)


def run_training(
    exposures: Sequence[TrainingExposure],
    *,
    tracking_uri: str,
    work_dir: Path,
    request: TrainingRequest | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    tags: Mapping[str, str] | None = None,
) -> TrainingRunResult:
    """Train, score and register a challenger.

    Parameters
    ----------
    exposures
        Training exposures (truth status ok, exposure time >= 100 s).
    tracking_uri
        MLflow tracking/registry URI.
    work_dir
        ``<data_root>/training``: datasets, split file, checkpoints.
    request
        What to train.
    progress
        Per-step callback (the CLI drives a progress bar with it).
    tags
        Extra tags for the MLflow run and the registered version (e.g. the pipeline run id,
        which lets a retried task find the version it already registered).

    Returns
    -------
    TrainingRunResult

    Raises
    ------
    InputDataError
        No exposures, unreadable files, or no patch left in the train split (every field hashed
        to validation or test).
    """
    request = request or TrainingRequest()
    dataset = _training_dataset(exposures, work_dir=work_dir, request=request)
    network, metadata, initial_label = initial_model(request, tracking_uri=tracking_uri)
    truth_tags = _truth_tags(exposures, initial_label, tracking_uri=tracking_uri)
    run_key = hashlib.sha256(
        json.dumps([dataset.dataset_id, request.config.key(), initial_label, request.hidden]).encode()
    ).hexdigest()[:16]
    checkpoint_dir = work_dir / "runs" / run_key
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    client = mlflow_client(tracking_uri)
    experiment = experiment_id(client, f"{EXPERIMENT_PREFIX}{request.instrument}")
    with active_tracking(tracking_uri):
        run, resumed = _start_or_resume_run(
            client, experiment, request=request, checkpoint_dir=checkpoint_dir, run_key=run_key, tags=tags
        )
        with run:
            run_id = run.info.run_id
            if not resumed:
                _log_parameters(request, dataset, initial_label, metadata)
                _set_run_tags(truth_tags)
            result, test_report, initial_report = _train_and_score(
                network,
                metadata,
                dataset,
                request=request,
                checkpoint_dir=checkpoint_dir,
                initial_label=initial_label,
                progress=progress,
            )
            _log_training_metrics(result.patches_per_second, result.best_epoch)
            _log_reports(test_report, initial_report)
            version = None
            if request.register:
                version = _register_challenger(
                    tracking_uri,
                    result.state_dict,
                    metadata,
                    run_id=run_id,
                    model_name=registered_model_name(request.instrument),
                    initial_label=initial_label,
                    dataset=dataset,
                    tags=truth_tags | _summary_tags(test_report) | dict(tags or {}),
                )
    return TrainingRunResult(
        run_id=run_id,
        version=version,
        dataset=dataset,
        history=result.history,
        patches_per_second=result.patches_per_second,
        test_report=test_report,
        initial_report=initial_report,
        initial_label=initial_label,
    )


def _training_dataset(
    exposures: Sequence[TrainingExposure], *, work_dir: Path, request: TrainingRequest
) -> PatchDataset:
    """Cut (or reuse) the patch dataset; refuse one whose train split is empty."""
    dataset = build_patch_dataset(
        exposures,
        work_dir / "datasets",
        params=request.patch_parameters(),
        fractions=request.fractions,
        seed=request.config.seed,
    )
    if not dataset.manifest.get("patches_per_split", {}).get("train"):
        raise InputDataError(
            dataset.directory,
            "no patch in the train split: every field of these exposures hashed to validation or test "
            f"(fractions {asdict(request.fractions)})",
            fix="add truth for more fields, or lower CRLIB_TRAIN_TEST_FRACTION and "
            "CRLIB_TRAIN_VALIDATION_FRACTION",
        )
    return dataset


def _start_or_resume_run(
    client: MlflowClient,
    experiment: str,
    *,
    request: TrainingRequest,
    checkpoint_dir: Path,
    run_key: str,
    tags: Mapping[str, str] | None,
) -> tuple[ActiveRun, bool]:
    """The unfinished MLflow run recorded in ``checkpoint_dir`` (resumed: True), or a new one.

    Must be called inside :func:`~crlib.registry.tracking.active_tracking`.
    """
    import mlflow

    run_file = checkpoint_dir / "mlflow_run.json"
    previous_run = json.loads(run_file.read_text())["run_id"] if run_file.exists() else None
    if previous_run is not None and client.get_run(previous_run).info.status != "FINISHED":
        run = mlflow.start_run(run_id=previous_run)
    else:
        run = mlflow.start_run(
            experiment_id=experiment,
            run_name=f"train-{request.initial}-{run_key[:8]}",
            tags=dict(tags or {}),
        )
        run_file.write_text(json.dumps({"run_id": run.info.run_id}))
    return run, previous_run == run.info.run_id


def _train_and_score(
    network: torch.nn.Module,
    metadata: ModelMetadata,
    dataset: PatchDataset,
    *,
    request: TrainingRequest,
    checkpoint_dir: Path,
    initial_label: str,
    progress: Callable[[TrainingProgress], None] | None,
) -> tuple[TrainingResult, EvaluationReport, EvaluationReport]:
    """Score the starting model on the test split, train (epochs logged), score the best weights.

    ``network`` ends with the best epoch's weights. Returns the training result and the test
    reports of the trained and of the starting model.
    """
    initial_report = evaluate_network(
        network, metadata, dataset, split="test", model_label=initial_label, device=request.config.device
    )
    result = train_network(
        network,
        metadata,
        dataset,
        config=request.config,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        epoch_end=_log_epoch,
    )
    network.load_state_dict(result.state_dict)
    test_report = evaluate_network(
        network, metadata, dataset, split="test", model_label="trained", device=request.config.device
    )
    return result, test_report, initial_report


def _set_run_tags(truth_tags: Mapping[str, str]) -> None:
    import mlflow

    mlflow.set_tags(dict(truth_tags))


def _log_epoch(record: EpochRecord) -> None:
    """Per-epoch metrics of the active run (step: the epoch)."""
    import mlflow

    metrics = {"train_loss": record.train_loss, "lr": record.lr, "epoch_seconds": record.seconds}
    if record.validation_loss is not None:
        metrics["validation_loss"] = record.validation_loss
    metrics["patches_per_second"] = record.patches / max(record.seconds, 1e-9)
    mlflow.log_metrics(metrics, step=record.epoch)


def _log_training_metrics(patches_per_second: float, best_epoch: int) -> None:
    import mlflow

    mlflow.log_metrics({"train_patches_per_second": patches_per_second, "best_epoch": best_epoch})


def _register_challenger(
    tracking_uri: str,
    state_dict: dict[str, torch.Tensor],
    metadata: ModelMetadata,
    *,
    run_id: str,
    model_name: str,
    initial_label: str,
    dataset: PatchDataset,
    tags: Mapping[str, str],
) -> RegisteredVersion:
    """Log the trained weights as a model package of run ``run_id`` and register it as challenger.

    ``tags`` (truth source, test summary, caller's tags) are added to the version's own tags
    (source, starting model, dataset, manifest, scoring rules).
    """
    from dataclasses import replace

    with tempfile.TemporaryDirectory(prefix="crlib-package-") as tmp:
        package = Path(tmp) / "package"
        written = write_package(
            package,
            state_dict,
            replace(
                metadata, source=f"crlib training run {run_id} from {initial_label}", state_dict_sha256=""
            ),
        )
        model_uri = log_model_package(package, written)
    return register_version(
        tracking_uri,
        model_uri=model_uri,
        model_name=model_name,
        run_id=run_id,
        alias=CHALLENGER,
        tags={
            "crlib.source": "training",
            "crlib.initial": initial_label,
            "crlib.dataset_id": dataset.dataset_id,
            "crlib.dataset_dir": str(dataset.directory),
            MANIFEST_TAG: f"runs:/{run_id}/dataset/manifest.json",
            SCORING_TAG: dataset_rules(dataset.manifest).describe(),
        }
        | dict(tags),
        reason=f"trained by run {run_id}",
    )


def _truth_tags(
    exposures: Sequence[TrainingExposure], initial_label: str, *, tracking_uri: str
) -> dict[str, str]:
    """``crlib.truth_source`` and ``crlib.simulated_exposures`` of a run and the model it starts from.

    The source combines this run's exposures with what the starting model was trained on
    (deepCR's shipped weights: real data; a registered version: its own ``crlib.truth_source``
    chain; scratch: nothing): all simulated -> ``simulator``, none -> ``real``, else ``mixed``
    (e.g. deepCR's weights fine-tuned on a simulated archive).
    """
    from crlib.registry.provenance import SIMULATED_EXPOSURES_TAG, combine_truth_sources, version_provenance
    from crlib.registry.versions import get_version

    source, simulated, total = truth_source_of(exposures)
    sources: list[str] = [source]
    name, _, number = initial_label.partition("/")
    if number.isdigit():  # fine-tuned from a registered version: inherit what it was trained on
        sources.append(version_provenance(tracking_uri, get_version(tracking_uri, name, number)).truth_source)
    elif initial_label.startswith("deepCR"):  # deepCR's shipped weights: trained on real HST data
        sources.append("real")
    combined = combine_truth_sources(sources)
    if combined != "real":
        log.warning(
            "training on %d simulated of %d exposures (starting from %s): the version is tagged "
            "crlib.truth_source=%s and cannot become champion without --allow-simulated",
            simulated,
            total,
            initial_label,
            combined,
        )
    return {TRUTH_SOURCE_TAG: combined, SIMULATED_EXPOSURES_TAG: f"{simulated}/{total}"}


def _log_parameters(
    request: TrainingRequest, dataset: PatchDataset, initial_label: str, metadata: ModelMetadata
) -> None:
    import mlflow

    config = asdict(request.config)
    augmentation = config.pop("augmentation")
    params = {f"train_{k}": v for k, v in config.items()}
    params |= {f"augment_{k}": v for k, v in augmentation.items()}
    params |= {f"patch_{k}": v for k, v in asdict(request.patch_parameters()).items()}
    params |= {f"split_{k}": v for k, v in asdict(request.fractions).items()}
    params |= {
        "initial": request.initial,
        "initial_model": initial_label,
        "architecture": metadata.architecture,
        "hidden": metadata.hidden,
        "input_scale": metadata.scale,
        "dataset_id": dataset.dataset_id,
        "dataset_dir": str(dataset.directory),
        "exposures": len(dataset.manifest["exposures"]),
        "visits": len(dataset.manifest["visits"]),
    }
    params |= {f"patches_{k}": v for k, v in dataset.manifest["patches_per_split"].items()}
    mlflow.log_params(params)
    manifest = {k: v for k, v in dataset.manifest.items() if k != "index"}
    mlflow.log_dict(manifest, "dataset/manifest.json")
    mlflow.log_dict({"index": dataset.index}, "dataset/patch_index.json")


def _metric_name(prefix: str, key: str, fpr: str, dilated: bool) -> str:
    return f"{prefix}/{key}/tpr_at_{fpr}{'_dilated' if dilated else ''}"


def _log_reports(trained: EvaluationReport, initial: EvaluationReport) -> None:
    """Test-split metrics, the per-field-type TPR table and ROC plots."""
    import math

    import mlflow
    from crlib.metrics.roc import plot_roc

    metrics = {}
    for prefix, report in (("test", trained), ("test_initial", initial)):
        for group in report.groups:
            for dilated, values in ((False, group.tpr), (True, group.tpr_dilated)):
                for fpr, tpr in values.items():
                    if not math.isnan(tpr):
                        metrics[_metric_name(prefix, group.key, fpr, dilated)] = 100.0 * tpr
    if metrics:
        mlflow.log_metrics(metrics)
    mlflow.log_dict(
        {"trained": trained.table(), "initial": {"model": initial.model_label, "rows": initial.table()}},
        "evaluation/tpr_table.json",
    )
    with tempfile.TemporaryDirectory(prefix="crlib-roc-") as tmp:
        for group in trained.groups:
            curves = {"trained": group.curve(), "trained dilated": group.curve(dilated=True)}
            try:
                reference = initial.group(group.key)
                curves |= {
                    initial.model_label: reference.curve(),
                    f"{initial.model_label} dilated": reference.curve(dilated=True),
                }
            except KeyError:
                pass
            name = group.key.replace("/", "_")
            path = plot_roc(curves, Path(tmp) / f"roc_{name}.png", title=f"test split: {group.key}")
            mlflow.log_artifact(str(path), "evaluation")


def _summary_tags(report: EvaluationReport) -> dict[str, str]:
    tags = {}
    for group in report.groups:
        for fpr, tpr in group.tpr.items():
            tags[f"crlib.test.{group.key}.tpr_at_{fpr}"] = f"{100.0 * tpr:.3f}"
    return tags
