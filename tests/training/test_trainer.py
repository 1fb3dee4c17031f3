"""The training loop: learns, is deterministic, resumes after a kill, freezes BatchNorm like deepCR."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from crlib.errors import ConfigError
from crlib.model.networks import UNet2
from crlib.model.package import ModelMetadata
from crlib.training.trainer import TrainingConfig, masked_bce, train_network

METADATA = ModelMetadata("unet2-batchnorm", hidden=4)
CONFIG = TrainingConfig(epochs=3, batch_size=4, lr=0.01, seed=5)


def _fresh() -> UNet2:
    torch.manual_seed(0)
    return UNet2("unet2-batchnorm", hidden=4)


def test_masked_bce_ignores_flagged_pixels() -> None:
    prediction = torch.tensor([[0.9, 0.1]])
    truth = torch.tensor([[0.0, 0.0]])
    assert float(masked_bce(prediction, truth, torch.tensor([[1.0, 0.0]]))) == pytest.approx(
        -torch.log(torch.tensor(0.9)).item()
    )


def test_training_lowers_the_loss_and_is_deterministic(tiny_dataset, tmp_path: Path) -> None:
    first = train_network(_fresh(), METADATA, tiny_dataset, config=CONFIG, checkpoint_dir=tmp_path / "a")
    second = train_network(_fresh(), METADATA, tiny_dataset, config=CONFIG, checkpoint_dir=tmp_path / "b")
    losses = [r.train_loss for r in first.history]
    assert losses[-1] < losses[0]
    assert [r.phase for r in first.history] == [0, 1, 1]  # deepCR: 40% of epochs learn BatchNorm statistics
    assert first.history[1].lr == pytest.approx(CONFIG.lr / 2.5)
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert first.patches_per_second > 0


def test_batchnorm_statistics_are_frozen_in_phase_one(tiny_dataset, tmp_path: Path) -> None:
    config = TrainingConfig(epochs=2, batch_size=4, freeze_fraction=0.0, seed=1)
    network = _fresh()
    batchnorm = network.get_submodule("inc.conv.conv.1")
    before = batchnorm.get_buffer("running_mean").clone()
    train_network(network, METADATA, tiny_dataset, config=config, checkpoint_dir=tmp_path)
    assert torch.equal(batchnorm.get_buffer("running_mean"), before)


def test_a_killed_run_resumes_from_its_checkpoint(tiny_dataset, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from pathlib import Path
        from crlib.model.networks import UNet2
        from crlib.model.package import ModelMetadata
        from crlib.training.patches import open_patch_dataset
        from crlib.training.trainer import TrainingConfig, train_network

        def progress(event):
            if event.epoch == 2 and event.step == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        torch.manual_seed(0)
        train_network(UNet2("unet2-batchnorm", hidden=4), ModelMetadata("unet2-batchnorm", hidden=4),
                      open_patch_dataset(Path({str(tiny_dataset.directory)!r})),
                      config=TrainingConfig(epochs=3, batch_size=4, lr=0.01, seed=5),
                      checkpoint_dir=Path({str(tmp_path / "killed")!r}), progress=progress)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert killed.returncode == -9
    resumed = train_network(
        _fresh(), METADATA, tiny_dataset, config=CONFIG, checkpoint_dir=tmp_path / "killed"
    )
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 3
    straight = train_network(
        _fresh(), METADATA, tiny_dataset, config=CONFIG, checkpoint_dir=tmp_path / "straight"
    )
    assert all(torch.equal(resumed.state_dict[k], straight.state_dict[k]) for k in straight.state_dict)


def test_a_checkpoint_of_another_configuration_is_not_resumed(tiny_dataset, tmp_path: Path) -> None:
    train_network(
        _fresh(),
        METADATA,
        tiny_dataset,
        config=TrainingConfig(epochs=1, batch_size=4),
        checkpoint_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="different training configuration"):
        train_network(
            _fresh(),
            METADATA,
            tiny_dataset,
            config=TrainingConfig(epochs=1, batch_size=8),
            checkpoint_dir=tmp_path,
        )


def test_a_corrupt_checkpoint_is_refused(tiny_dataset, tmp_path: Path) -> None:
    from crlib.errors import ModelError

    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="unreadable training checkpoint"):
        train_network(_fresh(), METADATA, tiny_dataset, config=CONFIG, checkpoint_dir=tmp_path)
