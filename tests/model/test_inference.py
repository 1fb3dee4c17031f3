from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from testsupport.flc import synthetic_chip

from crlib.errors import ConfigError
from crlib.model.inference import (
    BF16_MIN_MASK_JACCARD,
    MaskEngine,
    bf16_supported,
    mask_agreement,
    plan_windows,
)
from crlib.model.weights import SHIPPED_MODELS, deepcr_mask_dir, load_shipped_model


def deepcr_reference(name: str):
    """deepCR's own object for a shipped model (per-filter files loaded into deepCR's own classes)."""
    warnings.simplefilter("ignore")
    from deepCR import deepCR

    spec = SHIPPED_MODELS[name]
    detector = deepCR(
        mask="WFC3-UVIS" if spec.architecture == "unet2-weightnorm" else "ACS-WFC", device="CPU"
    )
    state = torch.load(deepcr_mask_dir() / str(spec.filename), map_location="cpu", weights_only=True)
    detector.maskNet.load_state_dict(state)
    return detector


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_probabilities_equal_deepcr_clean(name: str) -> None:
    # Odd-sized chip: exercises deepCR's top/left padding to a multiple of 4, and our windows.
    image, truth = synthetic_chip((203, 347), seed=5)
    expected = deepcr_reference(name).clean(image, inpaint=False, binary=False)
    engine = MaskEngine(load_shipped_model(name), device="cpu", window=96)
    got = engine.predict_chip(image).probability
    assert got.dtype == np.float32 and got.shape == image.shape
    assert np.abs(got - expected).max() < 1e-4
    assert np.array_equal(got > 0.5, expected > 0.5)
    assert (got > 0.5)[truth].mean() > 0.5  # the model does find the injected CRs


def test_no_seams_where_deepcr_has_them() -> None:
    image, _ = synthetic_chip((1040, 1100), seed=9, n_stars=150, n_crs=600)
    detector = deepcr_reference("ACS-WFC")
    tiled = detector.clean(image, inpaint=False, binary=False)  # default 1024-px tiles, no overlap
    whole = detector.clean(image, inpaint=False, binary=False, segment=False)
    got = MaskEngine(load_shipped_model("ACS-WFC"), device="cpu").predict_chip(image).probability
    # Ours equals deepCR's whole-image result everywhere (no seams) ...
    assert np.abs(got - whole).max() < 1e-4
    # ... and deepCR's tiled result away from its tile borders at 1024 px.
    away = np.ones(image.shape, dtype=bool)
    away[1024 - 16 : 1024 + 16, :] = False
    away[:, 1024 - 16 : 1024 + 16] = False
    assert np.abs(got - tiled)[away].max() < 1e-4
    # deepCR's own tiles do change the result at the seam.
    assert np.abs(whole - tiled)[~away].max() > 1e-3


@pytest.mark.parametrize("window,batch", [(64, 1), (128, 3), (256, 2)])
def test_window_size_and_batch_do_not_change_the_result(window: int, batch: int) -> None:
    image, _ = synthetic_chip((180, 250), seed=2)
    model = load_shipped_model("ACS-WFC")
    reference = MaskEngine(model, device="cpu", window=512).predict_chip(image).probability
    got = MaskEngine(model, device="cpu", window=window, batch=batch).predict_chip(image).probability
    assert np.abs(got - reference).max() < 1e-5


def test_windows_cover_the_image_once_with_even_origins() -> None:
    shape = (300, 520)
    windows = plan_windows(shape, window=96)
    cover = np.zeros(shape, dtype=int)
    for w in windows:
        assert w.y0 % 2 == 0 and w.x0 % 2 == 0
        assert 0 <= w.y0 <= shape[0] - 96 and 0 <= w.x0 <= shape[1] - 96
        cover[w.core_y[0] : w.core_y[1], w.core_x[0] : w.core_x[1]] += 1
    assert (cover == 1).all()
    with pytest.raises(ValueError):
        plan_windows(shape, window=96, margin=4)


@pytest.mark.parametrize("name", ["ACS-WFC", "WFC3-UVIS"])
def test_chips_of_any_size_equal_deepcr(name: str) -> None:
    # drizzlepac's real test files are 10x10; subarrays are 512x513; a chip may be narrower than a
    # window's margins (these used to fail with "window must be ... larger than 2 * margin")
    detector = deepcr_reference(name)
    engine = MaskEngine(load_shipped_model(name), device="cpu", threads=1)
    rng = np.random.default_rng(3)
    for shape in [(10, 10), (13, 7), (3, 300), (24, 24), (26, 30)]:
        image = rng.normal(100.0, 10.0, shape).astype(np.float32)
        image[shape[0] // 2, shape[1] // 2] += 3000.0  # a hot pixel / CR hit
        expected = detector.clean(image, inpaint=False, binary=False, segment=False)
        got = engine.predict_chip(image).probability
        assert got.shape == shape
        assert np.abs(got - expected).max() < 1e-4, shape
    windows = plan_windows((12, 12), window=12)
    assert [(w.core_y, w.core_x) for w in windows] == [((0, 12), (0, 12))]


def test_nonfinite_pixels_get_zero_probability_and_do_not_spread() -> None:
    image, _ = synthetic_chip((160, 200), seed=4)
    engine = MaskEngine(load_shipped_model("ACS-WFC"), device="cpu")
    clean = engine.predict_chip(image).probability
    broken = image.copy()
    broken[40:44, 50:60] = np.nan
    broken[100, 100] = np.inf
    result = engine.predict_chip(broken)
    assert np.isfinite(result.probability).all()
    assert result.nonfinite.sum() == 41
    assert (result.probability[result.nonfinite] == 0).all()
    far = np.ones(image.shape, dtype=bool)
    far[20:70, 30:80] = False
    far[80:120, 80:120] = False
    assert np.abs(result.probability - clean)[far].max() < 1e-5


def test_all_nan_chip_is_refused() -> None:
    engine = MaskEngine(load_shipped_model("ACS-WFC"), device="cpu")
    with pytest.raises(ValueError, match="no finite pixels"):
        engine.predict_chip(np.full((64, 64), np.nan, dtype=np.float32))


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="CPU without native bfloat16")
@pytest.mark.parametrize("name", ["ACS-WFC", "WFC3-UVIS"])
def test_bf16_masks_agree_with_fp32_within_the_stated_tolerance(name: str) -> None:
    image, _ = synthetic_chip((256, 384), seed=8, n_crs=200)
    model = load_shipped_model(name)
    fp32 = MaskEngine(model, device="cpu").predict_chip(image).probability > 0.5
    bf16 = MaskEngine(model, device="cpu", precision="bf16").predict_chip(image).probability > 0.5
    assert mask_agreement(fp32, bf16)["jaccard"] >= BF16_MIN_MASK_JACCARD


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        MaskEngine(load_shipped_model("ACS-WFC"), device="cuda")


def test_unknown_device_and_precision_are_configuration_errors() -> None:
    model = load_shipped_model("ACS-WFC")
    with pytest.raises(ConfigError, match="unknown device"):
        MaskEngine(model, device="tpu")
    with pytest.raises(ConfigError, match="unknown precision"):
        MaskEngine(model, device="cpu", precision="fp8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "expected"), [({"avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"), (set(), "fp32")]
)
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(flags, expected, monkeypatch) -> None:
    from crlib.model import inference

    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset({"avx2", *flags}))
    assert inference.resolve_precision("auto", torch.device("cpu")) == expected
    assert MaskEngine(load_shipped_model("ACS-WFC"), device="cpu", precision="auto").precision == expected
    # an explicit choice is kept (bf16 without native support stays an error, not a silent fp32)
    assert inference.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    if expected == "fp32":
        with pytest.raises(ConfigError, match="no native bfloat16"):
            MaskEngine(load_shipped_model("ACS-WFC"), device="cpu", precision="bf16")


def test_auto_precision_stays_fp32_on_cuda(monkeypatch) -> None:
    from crlib.model import inference

    monkeypatch.setattr(inference, "bf16_supported", lambda device: True)
    assert inference.resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(ConfigError, match="CRLIB_INFERENCE_PRECISION"):
        inference.resolve_precision("fp16", torch.device("cpu"))
