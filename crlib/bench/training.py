"""Training-throughput benchmark: crlib's loop against deepCR's own training step, same patches.

The reference is deepCR 0.3.1's ``training.train.optimize_network`` (its input normalisation,
masked ``BCELoss`` and Adam step) on deepCR's own ``UNet2SigmoidBatchNorm``, driven batch by batch
on the same patches; crlib's number is a full :func:`crlib.training.trainer.train_network` epoch
(augmentation, ignore-masked loss, checkpoint) on a patch dataset. Both run in this process with
the same thread count.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_patches(count: int, patch: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky + noise images with short CR streaks: images float32 (N, P, P) e-, masks and ignore uint8."""
    rng = np.random.default_rng(seed)
    images = rng.normal(80.0, 9.0, size=(count, patch, patch)).astype(np.float32)
    masks = np.zeros((count, patch, patch), np.uint8)
    for i in range(count):
        for _ in range(patch * patch // 2000 + 1):
            y, x = rng.integers(2, patch - 8, size=2)
            length = int(rng.integers(1, 6))
            masks[i, y, x : x + length] = 1
            images[i, y, x : x + length] += rng.uniform(100, 2000)
    ignore = (rng.random((count, patch, patch)) < 0.01).astype(np.uint8)
    return images, masks, ignore


def write_synthetic_dataset(
    directory: Path,
    images: np.ndarray,
    masks: np.ndarray,
    ignore: np.ndarray,
    *,
    splits: list[str] | None = None,
) -> Any:
    """Write arrays as a patch dataset (one pseudo exposure; ``splits`` per patch, default all train)."""
    import json

    from crlib.training.patches import DATASET_SCHEMA, MANIFEST, open_patch_dataset

    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (("images", images), ("masks", masks), ("ignore", ignore)):
        np.save(directory / f"{name}.npy", array)
    index = [
        {
            "rootname": "bench0000",
            "visit": "bench0",
            "chip": 1,
            "y0": 0,
            "x0": 0,
            "split": split,
            "field_type": "extragalactic",
            "filter": "F606W",
            "sky": 80.0,
            "cr_pixels": int(m.sum()),
            "ignored_pixels": 0,
        }
        for m, split in zip(masks, splits or ["train"] * len(masks), strict=True)
    ]
    manifest = {
        "schema": DATASET_SCHEMA,
        "parameters": {},
        "exposures": [],
        "visits": {},
        "patches_per_split": {
            s: sum(r["split"] == s for r in index) for s in ("train", "validation", "test")
        },
        "index": index,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return open_patch_dataset(directory)


def run_training_benchmark(
    *, patches: int = 32, batch_size: int = 8, patch: int = 256, threads: int = 1
) -> dict[str, float]:
    """Measure patches per second of both loops (one warm-up batch each, then one epoch).

    Returns
    -------
    dict
        ``crlib_patches_per_s``, ``deepcr_patches_per_s``, ``ratio_vs_deepcr`` (crlib / deepCR).
    """
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    images, masks, ignore = synthetic_patches(patches, patch)

    # deepCR's own training step on its own network.
    from deepCR.training import train as DeepcrTrain
    from deepCR.unet import WrappedModel
    from deepCR.unet_batchnorm import UNet2SigmoidBatchNorm

    torch.manual_seed(0)
    reference = object.__new__(DeepcrTrain)
    reference.network = WrappedModel(UNet2SigmoidBatchNorm(1, 1, 32))
    reference.network.train()
    reference.dtype = torch.FloatTensor
    reference.shape = patch
    reference.optimizer = torch.optim.Adam(reference.network.parameters(), lr=0.005)
    reference.BCELoss = nn.BCELoss()

    def deepcr_batch(start: int) -> None:
        s = slice(start, start + batch_size)
        reference.optimize_network(
            (
                torch.from_numpy(images[s]),
                torch.from_numpy(masks[s].astype(np.float32)),
                torch.from_numpy(ignore[s].astype(np.float32)),
            )
        )

    deepcr_batch(0)
    started = time.perf_counter()
    for start in range(0, patches, batch_size):
        deepcr_batch(start)
    deepcr_rate = patches / (time.perf_counter() - started)

    from crlib.model.networks import UNet2
    from crlib.model.package import ModelMetadata
    from crlib.training.trainer import TrainingConfig, train_network

    with tempfile.TemporaryDirectory(prefix="crlib-bench-train-") as tmp:
        dataset = write_synthetic_dataset(Path(tmp) / "dataset", images, masks, ignore)
        metadata = ModelMetadata(architecture="unet2-batchnorm")
        warm = TrainingConfig(
            epochs=1, batch_size=batch_size, max_patches_per_epoch=batch_size, freeze_fraction=1.0
        )
        train_network(
            UNet2("unet2-batchnorm"), metadata, dataset, config=warm, checkpoint_dir=Path(tmp) / "warm"
        )
        config = TrainingConfig(
            epochs=1, batch_size=batch_size, freeze_fraction=1.0
        )  # BatchNorm learning, as deepCR here
        result = train_network(
            UNet2("unet2-batchnorm"), metadata, dataset, config=config, checkpoint_dir=Path(tmp) / "run"
        )
    crlib_rate = result.patches_per_second
    return {
        "patches": float(patches),
        "patch_px": float(patch),
        "threads": float(threads),
        "crlib_patches_per_s": round(crlib_rate, 3),
        "deepcr_patches_per_s": round(deepcr_rate, 3),
        "ratio_vs_deepcr": round(crlib_rate / deepcr_rate, 3) if deepcr_rate else 0.0,
    }
