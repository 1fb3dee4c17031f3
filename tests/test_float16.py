"""float16 bit patterns: the fast path gives exactly numpy's, on every kind of float32 value."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from crlib.float16 import float16_bits


def _numpy_bits(values: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore", over="ignore"):
        return values.astype(np.float16).view(np.uint16)


def test_bit_patterns_equal_numpys_for_a_sample_of_every_float32() -> None:
    pytest.importorskip("torch")  # the fast path is taken only where torch is loaded
    bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    specials = np.array([np.inf, -np.inf, 65504.0, 65520.0, 1e5, -1e5, 5.96e-8, 2.98e-8], np.float32)
    sample = np.concatenate([bits.view(np.float32), specials, np.zeros(2, np.float32)])
    values = sample[: sample.size // 7 * 7].reshape(-1, 7)[:, :6]  # also a non-contiguous view
    values[-1, :] = specials[:6]
    assert np.isnan(values).any() and np.isinf(values).any()
    assert np.array_equal(float16_bits(values), _numpy_bits(values))


@pytest.mark.parametrize("scale", [1.0, 1e-5, 1e-8, 1e-12])
def test_probability_maps_round_as_numpy_rounds_them(scale: float) -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    values = (rng.random((64, 96), dtype=np.float32) * np.float32(scale)).astype(np.float32)
    values[0, :4] = [0.0, -0.0, 1.0, np.float32(6.1035156e-05)]  # zeros, one, smallest normal
    values.flags.writeable = False  # as a memory-mapped FITS array is
    out = float16_bits(values)
    assert out.dtype == np.uint16 and out.shape == values.shape and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, _numpy_bits(values))


def test_without_torch_loaded_the_module_never_imports_it() -> None:
    code = (
        "import sys, numpy as np; from crlib.float16 import float16_bits; "
        "b = float16_bits(np.array([1e-7, 0.5], np.float32)); "
        "assert 'torch' not in sys.modules; print(b.tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(_numpy_bits(np.array([1e-7, 0.5], np.float32)).tolist())
