from __future__ import annotations

import pytest
import torch

from crlib.model.networks import UNet2
from crlib.model.weights import SHIPPED_MODELS, deepcr_mask_dir, read_state_file, strip_wrapper_prefix


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_state_dict_keys_and_shapes_match_deepcr_files(name: str) -> None:
    spec = SHIPPED_MODELS[name]
    shipped = strip_wrapper_prefix(read_state_file(deepcr_mask_dir() / str(spec.filename)))
    ours = UNet2(spec.architecture, hidden=spec.hidden).state_dict()
    assert list(ours) == list(shipped)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in shipped.items()}


@pytest.mark.parametrize("architecture", ["unet2-batchnorm", "unet2-weightnorm"])
def test_fused_network_computes_the_same_function(architecture: str) -> None:
    torch.manual_seed(0)
    net = UNet2(architecture, hidden=8)
    if architecture == "unet2-batchnorm":  # non-trivial running statistics
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    x = torch.randn(2, 1, 64, 48)
    with torch.inference_mode():
        expected = net(x)
        got = net.fused()(x)
    assert got.shape == (2, 1, 64, 48)
    assert torch.allclose(expected, got, atol=1e-5)


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        UNet2("unet3", hidden=4)  # type: ignore[arg-type]
