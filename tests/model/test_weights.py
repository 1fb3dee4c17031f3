from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crlib.errors import ModelError
from crlib.model.weights import (
    SHIPPED_MODELS,
    choose_model_name,
    deepcr_mask_dir,
    infer_architecture,
    input_scale_estimate,
    load_shipped_model,
    load_state,
    read_state_file,
)
from crlib.profiles import ACS_WFC, WFC3_UVIS


def test_every_shipped_model_loads_with_a_version() -> None:
    for name in SHIPPED_MODELS:
        model = load_shipped_model(name)
        assert model.name == name
        assert model.version.startswith("deepCR-0.3.1+")
        assert not any(p.requires_grad for p in model.network.parameters())


def test_load_state_accepts_the_wrapper_prefix_and_bare_keys() -> None:
    state = read_state_file(deepcr_mask_dir() / "ACS-WFC.pth")
    assert all(k.startswith("module.") for k in state)
    bare = {k.removeprefix("module."): v for k, v in state.items()}
    a = load_state("unet2-batchnorm", state)
    b = load_state("unet2-batchnorm", bare)
    x = torch.rand(1, 1, 32, 32) * 500
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_per_filter_models_have_the_global_architecture_and_input_scale() -> None:
    global_state = read_state_file(deepcr_mask_dir() / "ACS-WFC.pth")
    assert infer_architecture(global_state) == ("unet2-batchnorm", 32)
    global_scale = input_scale_estimate(global_state)
    for band in ACS_WFC.deepcr_filter_models:
        state = read_state_file(deepcr_mask_dir() / f"ACS-WFC-{band}.pth")
        assert infer_architecture(state) == ("unet2-batchnorm", 32)
        assert 0.3 < input_scale_estimate(state) / global_scale < 3  # trained on electrons, scale 1
    # deepCR's example model was trained on inputs divided by 100: the estimate sees it.
    example = read_state_file(deepcr_mask_dir() / "example_model.pth")
    assert input_scale_estimate(example) < global_scale / 50


def test_incompatible_state_dict_is_a_model_error() -> None:
    state = read_state_file(deepcr_mask_dir() / "ACS-WFC.pth")
    with pytest.raises(ModelError, match="not unet2-weightnorm"):
        load_state("unet2-weightnorm", state)
    with pytest.raises(ModelError, match="does not fit"):
        load_state("unet2-batchnorm", state, hidden=16)
    truncated = dict(list(state.items())[:-2])
    with pytest.raises(ModelError, match="does not fit"):
        load_state("unet2-batchnorm", truncated)
    with pytest.raises(ModelError, match="unknown model architecture"):
        load_state("resnet", state)


def test_nan_weights_are_a_model_error() -> None:
    state = read_state_file(deepcr_mask_dir() / "ACS-WFC.pth")
    state["module.outc.conv.bias"] = torch.tensor([float("nan")])
    with pytest.raises(ModelError, match="NaN"):
        load_state("unet2-batchnorm", state)


def test_corrupt_or_pickled_files_are_model_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.pth"
    corrupt.write_bytes((deepcr_mask_dir() / "ACS-WFC.pth").read_bytes()[:5000])
    with pytest.raises(ModelError, match="cannot read model weights"):
        read_state_file(corrupt)
    module_file = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module_file)
    with pytest.raises(ModelError):
        read_state_file(module_file)
    with pytest.raises(ModelError, match="not found"):
        read_state_file(tmp_path / "missing.pth")


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="ACS-WFC-F606W"):
        load_shipped_model("ACS-WFC-F999W")


def test_model_choice_prefers_the_per_filter_model() -> None:
    assert choose_model_name(ACS_WFC, "F606W") == "ACS-WFC-F606W"
    assert choose_model_name(ACS_WFC, "f814w") == "ACS-WFC-F814W"
    assert choose_model_name(ACS_WFC, "F475W") == "ACS-WFC"
    assert choose_model_name(ACS_WFC, None) == "ACS-WFC"
    assert choose_model_name(ACS_WFC, "F606W", override="ACS-WFC") == "ACS-WFC"
    assert choose_model_name(WFC3_UVIS, "F606W") == "WFC3-UVIS"
