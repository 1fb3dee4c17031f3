"""The separable dilation equals scipy's binary_dilation with the same rectangle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from crlib.truth.dilation import dilate_rectangle


@pytest.mark.parametrize("shape", [(3, 3), (7, 7), (5, 1), (1, 3)])
def test_equals_binary_dilation_including_the_edges(shape):
    rng = np.random.default_rng(5)
    mask = rng.random((41, 57)) < 0.02
    mask[0, 0] = mask[-1, 30] = mask[20, -1] = True  # set pixels on every edge
    expected = binary_dilation(mask, structure=np.ones(shape, dtype=bool))
    found = dilate_rectangle(mask, shape)
    assert found.dtype == bool and np.array_equal(found, expected)
    assert not np.shares_memory(found, mask)


def test_even_sides_are_refused():
    with pytest.raises(ValueError, match="odd sides"):
        dilate_rectangle(np.zeros((4, 4), bool), (2, 3))


def test_a_rectangle_larger_than_the_image():
    mask = np.zeros((2, 3), dtype=bool)
    mask[1, 2] = True
    expected = binary_dilation(mask, structure=np.ones((7, 9), dtype=bool))
    assert np.array_equal(dilate_rectangle(mask, (7, 9)), expected)
