"""Training-time augmentation: sky level, flips and 90-degree rotations (deepCR's recipe).

Sky augmentation adds ``f * sky`` electrons to the image with ``f`` uniform in ``sky_range``
(deepCR's ``aug_sky``, e.g. ``(-0.9, 3.0)``: from 10% to 4x the recorded sky), which stands in for
exposure times and backgrounds the archive has few of. Flips and rotations act identically on the
image, CR mask and ignore mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Augmentation:
    """Augmentation settings.

    Attributes
    ----------
    sky_range
        ``(low, high)`` multiples of the patch's sky added to the image; ``(0, 0)`` disables it.
    flips
        Random horizontal/vertical flips.
    rotations
        Random multiples of 90 degrees.
    """

    sky_range: tuple[float, float] = (-0.9, 3.0)
    flips: bool = True
    rotations: bool = True


def augment_batch(
    images: np.ndarray,
    masks: np.ndarray,
    ignore: np.ndarray,
    sky: np.ndarray,
    *,
    settings: Augmentation,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one batch (new arrays; inputs, possibly memory-mapped, are not modified).

    Parameters
    ----------
    images
        float32 (B, P, P), electrons.
    masks, ignore
        uint8 (B, P, P).
    sky
        float32 (B,), sky level per patch, electrons.
    settings
        What to apply.
    rng
        Random generator (the trainer's, so runs are reproducible and resumable).

    Returns
    -------
    tuple of ndarray
        Augmented images (float32), masks and ignore (uint8), same shapes.
    """
    images = np.array(images, dtype=np.float32, copy=True)
    masks = np.array(masks, copy=True)
    ignore = np.array(ignore, copy=True)
    batch = images.shape[0]
    low, high = settings.sky_range
    factors: np.ndarray = np.asarray(rng.uniform(low, high, size=batch), dtype=np.float32)
    flip_y: np.ndarray = np.asarray(rng.random(batch) < 0.5)
    flip_x: np.ndarray = np.asarray(rng.random(batch) < 0.5)
    turns: np.ndarray = np.asarray(rng.integers(0, 4, size=batch))
    if low != 0.0 or high != 0.0:
        images += (factors * sky.astype(np.float32))[:, None, None]
    for i in range(batch):
        stack = [images[i], masks[i], ignore[i]]
        if settings.flips and flip_y[i]:
            stack = [a[::-1, :] for a in stack]
        if settings.flips and flip_x[i]:
            stack = [a[:, ::-1] for a in stack]
        if settings.rotations and turns[i]:
            stack = [np.rot90(a, int(turns[i])) for a in stack]
        images[i], masks[i], ignore[i] = stack
    return images, masks, ignore
