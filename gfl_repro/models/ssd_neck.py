"""SSD's neck (mmdetection 3.3 ``SSDNeck`` for SSD512): L2Norm on conv4_3 and five extra
layers on fc7, giving seven levels.

``L2Norm`` (Liu et al.'s ParseNet scaling): ``w · x / (‖x‖₂ over channels + 1e-10)`` with a
learnable per-channel ``w`` initialised to 20 (at a toy VGG's narrower conv4_3, to the value that
keeps the elements' size: :func:`l2norm_scale`). Each extra layer is a 1×1 conv to half its
output width and a 3×3 stride-2 conv (padding 1), both with bias and ReLU; the last one is a
4×4 conv with stride 1 and padding 1 (SSD512). Output widths 512, 1024, 512, 256, 256, 256,
256: the first two are VGG16's own (conv4_3 and fc7, whatever width the VGG has), the extra
layers' are divided by ``width`` (the smoke profile's toy SSD: 4, i.e. 128 and 64 channels, the
tiny FPN's width), with a norm before each ReLU when ``norm`` ("gn" or "bn", as in
:mod:`gfl_repro.models.vgg`). Convs use Xavier uniform init.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from .vgg import norm_layer

EXTRA_CHANNELS = (512, 256, 256, 256, 256)
EXTRA_STRIDES = (2, 2, 2, 2, 1)
LAST_KERNEL = 4
CONV4_3_CHANNELS = 512  # VGG16's, for which SSD chose L2Norm's initial scale
L2NORM_SCALE = 20.0


def l2norm_scale(channels: int) -> float:
    """L2Norm's initial scale for a conv4_3 of ``channels``: 20 for VGG16's 512 (SSD's value),
    ``20 · sqrt(channels / 512)`` for a narrower toy VGG. L2Norm gives each position's feature
    vector the norm of its scale, i.e. elements of size about ``scale / sqrt(channels)``; keeping
    that size keeps level 1's logits at the paper's magnitude (at 1/16 width, 32 channels, the
    stock 20 makes them four times larger and the toy SSD reaches less than half its AP50:
    docs/choices.md)."""
    return L2NORM_SCALE * math.sqrt(channels / CONV4_3_CHANNELS)


class L2Norm(nn.Module):
    def __init__(self, channels: int, scale: float = L2NORM_SCALE, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x_float = x.float()
        norm = x_float.pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return (self.weight[None, :, None, None].float().expand_as(x_float) * x_float / norm).type_as(x)


def _conv_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
               norm: str | None = None) -> nn.Sequential:
    """A conv with bias and ReLU, parameters named like mmcv's ConvModule (``conv.*``, then
    ``gn.*`` or ``bn.*`` for the optional norm between them)."""
    layers = [("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, padding))]
    if norm is not None:
        layers.append((norm, norm_layer(norm, out_channels)))
    return nn.Sequential(OrderedDict(layers + [("activate", nn.ReLU(inplace=True))]))


class SSDNeck(nn.Module):
    def __init__(self, in_channels: tuple[int, int], width: int = 1, norm: str | None = None) -> None:
        super().__init__()
        self.l2_norm = L2Norm(in_channels[0], l2norm_scale(in_channels[0]))
        layers = []
        previous = in_channels[1]
        for i, (channels, stride) in enumerate(zip(EXTRA_CHANNELS, EXTRA_STRIDES)):
            channels //= width
            kernel = LAST_KERNEL if i == len(EXTRA_CHANNELS) - 1 else 3
            layers.append(nn.Sequential(_conv_relu(previous, channels // 2, 1, norm=norm),
                                        _conv_relu(channels // 2, channels, kernel, stride, 1, norm=norm)))
            previous = channels
        self.extra_layers = nn.ModuleList(layers)
        self.out_channels = (in_channels[0], in_channels[1], *(c // width for c in EXTRA_CHANNELS))
        for module in self.extra_layers.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        outs = [self.l2_norm(feats[0]), feats[1]]
        x = feats[1]
        for layer in self.extra_layers:
            x = layer(x)
            outs.append(x)
        return outs


__all__ = ["L2Norm", "SSDNeck", "l2norm_scale"]
