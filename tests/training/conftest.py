"""Fixtures for training tests: tiny synthetic patch datasets written in the real dataset format."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """24 patches of 32x32 px with CR streaks: 16 train, 4 validation, 4 test."""
    from crlib.bench.training import synthetic_patches, write_synthetic_dataset

    images, masks, ignore = synthetic_patches(24, 32, seed=4)
    splits = ["train"] * 16 + ["validation"] * 4 + ["test"] * 4
    return write_synthetic_dataset(tmp_path / "tiny", images, masks, ignore, splits=splits)
