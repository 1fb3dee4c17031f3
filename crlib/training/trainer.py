"""The training loop: masked BCE, Adam, plateau LR decay, deepCR's BatchNorm freeze, checkpoints.

Schedule (deepCR ``training.train``): the first ``freeze_fraction`` of the epochs ("phase 0")
train with batch statistics in BatchNorm while the running statistics accumulate; then ("phase
1") BatchNorm switches to eval mode, so the running statistics are frozen and used, and Adam
restarts at ``lr / 2.5``. In both phases the learning rate drops by ``lr_decay_factor`` when the
validation loss stops improving for ``lr_decay_patience`` epochs. The returned weights are those of
the epoch with the lowest validation loss.

Loss: binary cross-entropy averaged over pixels that are *not* ignored (DQ-flagged, invalid,
saturated): ignored pixels contribute nothing (deepCR zeroes them but keeps them in the mean).

A checkpoint (network, optimizer, scheduler, RNG states, history) is written atomically after
every epoch; a run started again with the same checkpoint directory and configuration continues
after the last completed epoch and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from crlib.errors import ConfigError, ModelError
from crlib.model.package import ModelMetadata
from crlib.training.augment import Augmentation, augment_batch
from crlib.training.patches import PatchDataset

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainingConfig:
    """Training hyper-parameters.

    Attributes
    ----------
    epochs
        Total epochs (both phases).
    batch_size
        Patches per optimisation step.
    lr
        Initial Adam learning rate (deepCR: 0.005 from scratch; smaller when fine-tuning).
    freeze_fraction
        Fraction of epochs before BatchNorm statistics are frozen (deepCR: 0.4).
    lr_decay_factor, lr_decay_patience
        ``ReduceLROnPlateau`` settings on the validation loss (deepCR: 0.1, 4).
    augmentation
        Sky/flip/rotation settings.
    seed
        Seeds patch order and augmentation.
    device
        ``cpu`` or ``cuda``.
    max_patches_per_epoch
        Subsample the training split per epoch (``None``: all patches).
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 0.005
    freeze_fraction: float = 0.4
    lr_decay_factor: float = 0.1
    lr_decay_patience: int = 4
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 0
    device: str = "cpu"
    max_patches_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.freeze_fraction <= 1:
            raise ConfigError(
                f"invalid training configuration: epochs={self.epochs}, batch_size={self.batch_size}, "
                f"lr={self.lr}, freeze_fraction={self.freeze_fraction}"
            )

    @property
    def phase0_epochs(self) -> int:
        """Epochs trained with BatchNorm batch statistics (deepCR rounds ``0.4 * epochs``)."""
        return int(self.epochs * self.freeze_fraction + 0.5)

    def key(self) -> str:
        """Hash of everything that must match for a checkpoint to be resumed (device excluded)."""
        data = asdict(self)
        data.pop("device")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """Numbers of one finished epoch."""

    epoch: int
    phase: int
    train_loss: float
    validation_loss: float | None
    lr: float
    seconds: float
    patches: int


@dataclass(frozen=True, slots=True)
class TrainingProgress:
    """Passed to the progress callback after every optimisation step."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    phase: int


@dataclass
class TrainingResult:
    """Outcome of :func:`train_network`.

    Attributes
    ----------
    state_dict
        Weights of the best epoch (lowest validation loss; last epoch without validation data).
    history
        One record per epoch, including epochs done before a resume.
    best_epoch
        1-based epoch whose weights are returned.
    patches_per_second
        Training throughput of the epochs run in this call (forward + backward + step).
    resumed_from_epoch
        Epochs already complete when this call started (0 for a fresh run).
    """

    state_dict: dict[str, torch.Tensor]
    history: list[EpochRecord]
    best_epoch: int
    patches_per_second: float
    resumed_from_epoch: int = 0


def prepare_input(images: torch.Tensor, metadata: ModelMetadata) -> torch.Tensor:
    """Network input from electrons: divide by ``scale`` and, if required, normalise per patch.

    ``images`` is float32 (B, 1, P, P); the same transform inference applies to whole chips.
    """
    scaled = images / float(metadata.scale)
    if metadata.normalise:
        mean = scaled.mean(dim=(1, 2, 3), keepdim=True)
        std = scaled.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        scaled = (scaled - mean) / std
    return scaled


def masked_bce(probabilities: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over pixels with ``ignore == 0`` (0 when every pixel is ignored)."""
    weight = 1.0 - ignore
    total = F.binary_cross_entropy(probabilities.clamp(1e-7, 1 - 1e-7), masks, weight=weight, reduction="sum")
    return total / weight.sum().clamp_min(1.0)


def _batch_tensors(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray], device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, masks, ignore = arrays
    as_tensor = [
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[:, None] for a in (images, masks, ignore)
    ]
    return as_tensor[0].to(device), as_tensor[1].to(device), as_tensor[2].to(device)


def validation_loss(
    network: torch.nn.Module,
    dataset: PatchDataset,
    indices: np.ndarray,
    metadata: ModelMetadata,
    *,
    batch_size: int,
    device: str,
) -> float | None:
    """Masked BCE over ``indices`` without augmentation, weighted by valid pixels (``None`` if empty)."""
    if len(indices) == 0:
        return None
    total, weight = 0.0, 0.0
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chosen = np.sort(indices[start : start + batch_size])
            images, masks, ignore = _batch_tensors(
                (dataset.images[chosen], dataset.masks[chosen], dataset.ignore[chosen]), device
            )
            probabilities = network(prepare_input(images, metadata))
            valid = float((1 - ignore).sum())
            total += float(masked_bce(probabilities, masks, ignore)) * valid
            weight += valid
    network.train(was_training)
    return total / weight if weight else None


Optimizer = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]


def _make_optimizer(network: torch.nn.Module, config: TrainingConfig, *, phase: int) -> Optimizer:
    """Adam at ``lr`` (phase 0) or ``lr / 2.5`` (phase 1), with its plateau scheduler."""
    lr = config.lr if phase == 0 else config.lr / 2.5
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=config.lr_decay_factor,
        patience=config.lr_decay_patience,
        cooldown=2,
        threshold=0.005,
    )
    return optimizer, scheduler


def _state_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


@dataclass
class _TrainingState:
    """Everything a checkpoint carries between epochs (besides the network's weights)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    history: list[EpochRecord]
    best_val: float
    best_state: dict[str, torch.Tensor]
    best_epoch: int = 0
    start_epoch: int = 0


def _training_indices(dataset: PatchDataset) -> tuple[np.ndarray, np.ndarray]:
    """The ``train`` and ``validation`` patch indices; refuse an empty training split."""
    train_indices = dataset.split_indices("train")
    val_indices = dataset.split_indices("validation")
    if len(train_indices) == 0:
        raise ConfigError(
            f"{dataset.directory}: the training split has no patches (add visits or change fractions)"
        )
    return train_indices, val_indices


def _start_or_resume(
    network: torch.nn.Module, config: TrainingConfig, rng: np.random.Generator, *, checkpoint_path: Path
) -> _TrainingState:
    """A fresh state, or the one saved in ``checkpoint_path`` (network and RNGs restored in place)."""
    state = _TrainingState(
        *_make_optimizer(network, config, phase=0),
        history=[],
        best_val=float("inf"),
        best_state=_state_copy(network),
    )
    saved = _load_checkpoint(checkpoint_path, config) if checkpoint_path.exists() else None
    if saved is None:
        return state
    state.start_epoch = int(saved["epoch"])
    network.load_state_dict(saved["network"])
    # the optimizer of the last completed epoch; the epoch loop switches phase
    # exactly where an uninterrupted run would
    phase = 0 if state.start_epoch - 1 < config.phase0_epochs else 1
    state.optimizer, state.scheduler = _make_optimizer(network, config, phase=phase)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    rng.bit_generator.state = json.loads(saved["rng"])
    torch.set_rng_state(saved["torch_rng"])
    state.history = [EpochRecord(**row) for row in json.loads(saved["history"])]
    state.best_val, state.best_epoch = float(saved["best_val"]), int(saved["best_epoch"])
    state.best_state = saved["best_state"]
    log.info("resuming training from %s after epoch %d", checkpoint_path, state.start_epoch)
    return state


def _train_epoch(
    network: torch.nn.Module,
    metadata: ModelMetadata,
    dataset: PatchDataset,
    order: np.ndarray,
    *,
    sky: np.ndarray,
    config: TrainingConfig,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    epoch: int,
    phase: int,
    steps: int,
    progress: Callable[[TrainingProgress], None] | None,
) -> float:
    """One pass over ``order`` in batches (augmented with ``rng``); the sum of loss x batch size."""
    loss_sum = 0.0
    for step in range(steps):
        chosen = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
        arrays = augment_batch(
            dataset.images[chosen],
            dataset.masks[chosen],
            dataset.ignore[chosen],
            sky[chosen],
            settings=config.augmentation,
            rng=rng,
        )
        images, masks, ignore = _batch_tensors(arrays, config.device)
        optimizer.zero_grad(set_to_none=True)
        loss = masked_bce(network(prepare_input(images, metadata)), masks, ignore)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(chosen)
        if progress is not None:
            progress(TrainingProgress(epoch + 1, config.epochs, step + 1, steps, float(loss.detach()), phase))
    return loss_sum


def _run_epoch(
    network: torch.nn.Module,
    metadata: ModelMetadata,
    dataset: PatchDataset,
    order: np.ndarray,
    *,
    val_indices: np.ndarray,
    sky: np.ndarray,
    config: TrainingConfig,
    state: _TrainingState,
    rng: np.random.Generator,
    epoch: int,
    phase: int,
    progress: Callable[[TrainingProgress], None] | None,
) -> EpochRecord:
    """Train on ``order``, validate, step the LR scheduler; the epoch's record."""
    per_epoch = len(order)
    started = time.perf_counter()
    loss_sum = _train_epoch(
        network,
        metadata,
        dataset,
        order,
        sky=sky,
        config=config,
        optimizer=state.optimizer,
        rng=rng,
        epoch=epoch,
        phase=phase,
        steps=(per_epoch + config.batch_size - 1) // config.batch_size,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    val = validation_loss(
        network, dataset, val_indices, metadata, batch_size=config.batch_size, device=config.device
    )
    state.scheduler.step(val if val is not None else loss_sum / per_epoch)
    return EpochRecord(
        epoch=epoch + 1,
        phase=phase,
        train_loss=loss_sum / per_epoch,
        validation_loss=val,
        lr=float(state.optimizer.param_groups[0]["lr"]),
        seconds=seconds,
        patches=per_epoch,
    )


def _finish_epoch(
    network: torch.nn.Module,
    state: _TrainingState,
    record: EpochRecord,
    *,
    config: TrainingConfig,
    rng: np.random.Generator,
    checkpoint_path: Path,
) -> None:
    """Record the epoch, keep the best weights so far, and write the checkpoint."""
    state.history.append(record)
    val = record.validation_loss
    if val is None or val <= state.best_val:
        state.best_val = val if val is not None else state.best_val
        state.best_epoch = record.epoch
        state.best_state = _state_copy(network)
    _save_checkpoint(
        checkpoint_path,
        {
            "epoch": record.epoch,
            "config_key": config.key(),
            "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps([asdict(r) for r in state.history]),
            "best_val": state.best_val,
            "best_epoch": state.best_epoch,
            "best_state": state.best_state,
        },
    )


def train_network(
    network: torch.nn.Module,
    metadata: ModelMetadata,
    dataset: PatchDataset,
    *,
    config: TrainingConfig,
    checkpoint_dir: Path,
    progress: Callable[[TrainingProgress], None] | None = None,
    epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainingResult:
    """Train ``network`` on the dataset's ``train`` split, validating on ``validation``.

    Parameters
    ----------
    network
        Initial network (champion, deepCR weights or freshly initialised); trained in place.
    metadata
        Input scale/normalisation of the model.
    dataset
        Patch dataset (memory-mapped).
    config
        Hyper-parameters.
    checkpoint_dir
        Where ``checkpoint.pt`` is written each epoch and looked for on start (resume).
    progress
        Called after every step (e.g. to drive a progress bar).
    epoch_end
        Called after every epoch with its record (e.g. to log metrics to MLflow).

    Returns
    -------
    TrainingResult

    Raises
    ------
    ConfigError
        If the training split is empty or the checkpoint belongs to another configuration.
    ModelError
        If the checkpoint is unreadable.
    """
    train_indices, val_indices = _training_indices(dataset)
    sky = dataset.sky()
    network.to(config.device)
    network.requires_grad_(True)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    phase0 = config.phase0_epochs
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = checkpoint_dir / CHECKPOINT
    state = _start_or_resume(network, config, rng, checkpoint_path=checkpoint_path)
    per_epoch = (
        len(train_indices)
        if config.max_patches_per_epoch is None
        else min(config.max_patches_per_epoch, len(train_indices))
    )
    trained_patches, trained_seconds = 0, 0.0
    for epoch in range(state.start_epoch, config.epochs):
        phase = 0 if epoch < phase0 else 1
        if epoch == phase0 and epoch > 0:  # deepCR: restart Adam at lr / 2.5
            state.optimizer, state.scheduler = _make_optimizer(network, config, phase=1)
        network.train(phase == 0)  # phase 1: BatchNorm running statistics frozen and used
        order = rng.permutation(train_indices)[:per_epoch]
        record = _run_epoch(
            network,
            metadata,
            dataset,
            order,
            val_indices=val_indices,
            sky=sky,
            config=config,
            state=state,
            rng=rng,
            epoch=epoch,
            phase=phase,
            progress=progress,
        )
        trained_patches += per_epoch
        trained_seconds += record.seconds
        _finish_epoch(network, state, record, config=config, rng=rng, checkpoint_path=checkpoint_path)
        if epoch_end is not None:
            epoch_end(record)
        log.info(
            "epoch %d/%d (phase %d): train loss %.5f, validation loss %s, %.1f patches/s",
            epoch + 1,
            config.epochs,
            phase,
            record.train_loss,
            f"{record.validation_loss:.5f}" if record.validation_loss is not None else "n/a",
            per_epoch / max(record.seconds, 1e-9),
        )
    network.eval()
    return TrainingResult(
        state_dict=state.best_state,
        history=state.history,
        best_epoch=state.best_epoch,
        patches_per_second=trained_patches / trained_seconds if trained_seconds else 0.0,
        resumed_from_epoch=state.start_epoch,
    )


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, config: TrainingConfig) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: unreadable training checkpoint ({type(exc).__name__}); delete it to start over"
        ) from None
    if not isinstance(saved, dict) or saved.get("config_key") != config.key():
        raise ConfigError(
            f"{path}: checkpoint was written with a different training configuration; "
            "use the same options to resume, or another --work-dir to start a new run"
        )
    return saved
