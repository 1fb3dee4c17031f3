"""deepCR mask networks, written in crlib, with state-dict keys identical to deepCR's.

deepCR 0.3.1 ships two mask architectures, both a two-level U-Net ("U-Net 2-32": one
down-sampling, ``hidden`` channels at full resolution, ``2 * hidden`` at half resolution):

``unet2-batchnorm``
    ``deepCR.unet_batchnorm.UNet2SigmoidBatchNorm``: every 3x3 convolution is followed by a
    BatchNorm layer. Used by ``ACS-WFC`` and the per-filter ``ACS-WFC-F435W/F606W/F814W`` models.
``unet2-weightnorm``
    ``deepCR.unet.UNet2Sigmoid``: 3x3 convolutions with weight normalisation
    (``weight_g``/``weight_v`` parameters) and no BatchNorm. Used by ``WFC3-UVIS``.

:class:`UNet2` holds the trained parameters under exactly deepCR's key names (without the
``module.`` prefix that deepCR's ``WrappedModel`` adds), so a shipped state dict loads key for key.
For inference it is converted by :meth:`UNet2.fused` into a :class:`FusedUNet2`: BatchNorm folded
into the preceding convolution, weight normalisation folded into plain weights, ReLU in place.
The fused network computes the same function with fewer memory passes.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

ArchitectureName = Literal["unet2-batchnorm", "unet2-weightnorm"]
ARCHITECTURES: tuple[ArchitectureName, ...] = ("unet2-batchnorm", "unet2-weightnorm")

#: BatchNorm momentum deepCR trains with (irrelevant for inference, kept for key/format parity).
_BN_MOMENTUM = 0.005


class WeightNormConv2d(nn.Module):
    """A 3x3 convolution parametrised as ``weight = g * v / ||v||`` (norm over all but dim 0).

    Parameters are named ``weight_g`` (shape ``(out, 1, 1, 1)``), ``weight_v`` (shape
    ``(out, in, k, k)``) and ``bias``, as ``torch.nn.utils.weight_norm`` names them in deepCR's files.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        # Registration order = deepCR's state-dict order (bias, weight_g, weight_v).
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight_v, a=5**0.5)
        self.padding = kernel_size // 2

    def effective_weight(self) -> torch.Tensor:
        """The plain convolution weight ``g * v / ||v||``, shape ``(out, in, k, k)``."""
        norm = self.weight_v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)


class DoubleConv(nn.Module):
    """Two 3x3 convolutions with ReLU; with BatchNorm after each convolution or weight-normalised.

    The ``conv`` sequential's indices match deepCR's (``0, 1, 3, 4`` with BatchNorm, ``0, 2`` without).
    """

    def __init__(self, in_channels: int, out_channels: int, *, batchnorm: bool) -> None:
        super().__init__()
        layers: list[nn.Module]
        if batchnorm:
            layers = [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels, momentum=_BN_MOMENTUM),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels, momentum=_BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
        else:
            layers = [
                WeightNormConv2d(in_channels, out_channels),
                nn.ReLU(inplace=True),
                WeightNormConv2d(out_channels, out_channels),
                nn.ReLU(inplace=True),
            ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Inconv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, batchnorm: bool) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels, batchnorm=batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, batchnorm: bool) -> None:
        super().__init__()
        self.mpconv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batchnorm=batchnorm)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mpconv(x)


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, batchnorm: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, batchnorm=batchnorm)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(low)], dim=1))


class _Outconv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet2(nn.Module):
    """deepCR's two-level U-Net mask network with a sigmoid output.

    Parameters
    ----------
    architecture
        ``"unet2-batchnorm"`` or ``"unet2-weightnorm"``.
    hidden
        Channels at full resolution (32 for every shipped mask model except ``ACS-WFC-F606W-2-4``).

    Notes
    -----
    Input ``(N, 1, H, W)`` with ``H`` and ``W`` even; output ``(N, 1, H, W)`` probabilities in [0, 1].
    """

    def __init__(self, architecture: ArchitectureName, *, hidden: int = 32) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")
        batchnorm = architecture == "unet2-batchnorm"
        self.architecture: ArchitectureName = architecture
        self.hidden = hidden
        self.inc = _Inconv(1, hidden, batchnorm=batchnorm)
        self.down1 = _Down(hidden, 2 * hidden, batchnorm=batchnorm)
        self.up8 = _Up(2 * hidden, hidden, batchnorm=batchnorm)
        self.outc = _Outconv(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.inc(x)
        low = self.down1(skip)
        return torch.sigmoid(self.outc(self.up8(low, skip)))

    @torch.no_grad()
    def fused(self) -> FusedUNet2:
        """An inference-only copy with BatchNorm / weight normalisation folded into the convolutions."""
        return FusedUNet2(
            inc=_fold_double(self.inc.conv),
            down=_fold_double(self.down1.mpconv[1]),
            up=_clone_conv_transpose(self.up8.up),
            upconv=_fold_double(self.up8.conv),
            out=_clone_conv(self.outc.conv),
        )


class FusedUNet2(nn.Module):
    """The U-Net 2 with every normalisation folded away: 7 convolutions, 1 transposed convolution.

    Build it with :meth:`UNet2.fused`. Input ``(N, 1, H, W)`` (``H``, ``W`` even), output probabilities.
    """

    def __init__(
        self,
        *,
        inc: tuple[nn.Conv2d, nn.Conv2d],
        down: tuple[nn.Conv2d, nn.Conv2d],
        up: nn.ConvTranspose2d,
        upconv: tuple[nn.Conv2d, nn.Conv2d],
        out: nn.Conv2d,
    ) -> None:
        super().__init__()
        self.inc1, self.inc2 = inc
        self.down1, self.down2 = down
        self.up = up
        self.upconv1, self.upconv2 = upconv
        self.out = out
        self.inner_dtype: torch.dtype | None = None

    def with_bfloat16_interior(self) -> FusedUNet2:
        """Run every layer but the first and last convolution in bfloat16 (in place; returns self).

        The first convolution sees raw electrons (sky of ~100 e- next to stars of 1e5 e-), which
        bfloat16's 8-bit mantissa would quantise; it and the 1x1 output convolution stay float32.
        """
        for layer in (self.inc2, self.down1, self.down2, self.up, self.upconv1, self.upconv2):
            layer.to(torch.bfloat16)
        self.inner_dtype = torch.bfloat16
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = F.relu_(self.inc1(x))
        if self.inner_dtype is not None:
            first = first.to(self.inner_dtype)
        skip = F.relu_(self.inc2(first))
        low = F.max_pool2d(skip, 2)
        low = F.relu_(self.down2(F.relu_(self.down1(low))))
        merged = torch.cat([skip, self.up(low)], dim=1)
        merged = F.relu_(self.upconv2(F.relu_(self.upconv1(merged))))
        return torch.sigmoid(self.out(merged.float()))


def _clone_conv(conv: nn.Conv2d) -> nn.Conv2d:
    return copy.deepcopy(conv)


def _clone_conv_transpose(conv: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    return copy.deepcopy(conv)


def _fold_double(block: nn.Module) -> tuple[nn.Conv2d, nn.Conv2d]:
    """Fold one :class:`DoubleConv` into two plain convolutions (ReLUs applied by the caller)."""
    assert isinstance(block, DoubleConv)
    layers = list(block.conv)
    convs: list[nn.Conv2d] = []
    for index, layer in enumerate(layers):
        weight: torch.Tensor
        bias: torch.Tensor | None
        if isinstance(layer, WeightNormConv2d):
            weight = layer.effective_weight()
            bias = layer.bias
        elif isinstance(layer, nn.Conv2d):
            weight, bias = layer.weight, layer.bias
            following = layers[index + 1]
            if isinstance(following, nn.BatchNorm2d):
                weight, bias = _fold_batchnorm(weight, bias, following)
        else:
            continue
        assert bias is not None
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], padding=weight.shape[2] // 2)
        conv.weight.copy_(weight)
        assert conv.bias is not None
        conv.bias.copy_(bias)
        convs.append(conv)
    first, second = convs
    return first, second


def _fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of ``bn(conv(x))`` as one convolution, computed in float64 then rounded."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    conv_bias = bias.double() if bias is not None else torch.zeros_like(scale)
    new_weight = weight.double() * scale.view(-1, 1, 1, 1)
    new_bias = (conv_bias - bn.running_mean.double()) * scale + bn.bias.double()
    return new_weight.to(weight.dtype), new_bias.to(weight.dtype)


def receptive_radius() -> int:
    """Pixels of context each output pixel needs on each side (with margin for the pooling grid).

    Two 3x3 convolutions at full resolution (2 px), a 2x2 pool (1 px), two 3x3 convolutions at
    half resolution (4 px), the 2x2 transposed convolution (0 px) and two more 3x3 convolutions
    (2 px): 9 px. Tiles overlap by at least this much on every inner side.
    """
    return 9
