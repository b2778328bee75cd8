"""Feature Pyramid Network as configured by mmdetection 3.3's GFL / ATSS models.

mmdet config (``gfl_r50_fpn_1x_coco``)::

    FPN(in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
        add_extra_convs='on_output', num_outs=5)
    # defaults: relu_before_extra_convs=False, no norm, no activation (plain convs with
    # bias), upsample_cfg=dict(mode='nearest'),
    # init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')

Our backbone returns only C3..C5, so ``in_channels`` here is mmdet's list from
``start_level`` on (``[512, 1024, 2048]`` for R-50) and every input is used. The
computation, read from ``mmdet/models/necks/fpn.py``:

1. ``lateral_i = conv1x1(C_i)``;
2. top-down, coarsest first: ``lateral_{i-1} += F.interpolate(lateral_i,
   size=lateral_{i-1}.shape[2:], mode='nearest')`` -- upsampling *to the finer map's size*
   (no fixed scale factor), so odd sizes such as 13x17 <- 7x9 work; nearest with a size
   picks source index ``floor(dst * in / out)``;
3. ``P_i = conv3x3(lateral_i)`` for P3..P5;
4. ``P6 = conv3x3_s2(P5)`` (``'on_output'``: on the FPN output, not on C5),
   ``P7 = conv3x3_s2(P6)``, no ReLU in between (``relu_before_extra_convs=False``).
   mmdet's FCOS configs set ``relu_before_extra_convs=True``: then ``P7 =
   conv3x3_s2(relu(P6))`` (every extra level after the first reads a ReLU'd input).
   RetinaNet's and FoveaBox's configs use ``'on_input'``: ``P6 = conv3x3_s2(C5)``
   (``extra_on_input=True``).

Init: Xavier uniform (gain 1) weights and zero bias on every conv (mmdet's ``init_cfg``).

Parameter layout equals mmdet's ``neck.*`` keys (each conv sits in a one-entry
``nn.Sequential`` named ``conv``, the name of mmcv's ``ConvModule.conv``)::

    lateral_convs.{0,1,2}.conv.{weight,bias}     1x1, C3..C5 -> out_channels
    fpn_convs.{0,1,2}.conv.{weight,bias}         3x3 output convs of P3..P5
    fpn_convs.{3,4}.conv.{weight,bias}           3x3 stride-2 extra convs -> P6, P7

so an mmdet checkpoint imports with ``{k[len('neck.'):]: v for k, v in sd.items() if
k.startswith('neck.')}``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN"]


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A conv with bias wrapped so its parameters are named ``conv.weight`` / ``conv.bias``."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=True)
    return nn.Sequential(OrderedDict(conv=conv))


class FPN(nn.Module):
    """``FPN(in_channels, out_channels=256, num_outs=5)(feats) -> [P3, ..., P7]``.

    ``feats`` are C3..C5 (len(in_channels) maps, strides 8/16/32); the output has
    ``num_outs`` maps with ``out_channels`` channels each and strides 8, 16, ..., i.e.
    8..128 for the default 5 outputs. ``num_outs - len(in_channels)`` extra levels are
    stride-2 3x3 convs applied in sequence on the last FPN output.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_outs: int = 5,
                 relu_before_extra_convs: bool = False, extra_on_input: bool = False) -> None:
        super().__init__()
        self.relu_before_extra_convs = relu_before_extra_convs
        self.extra_on_input = extra_on_input  # mmdet's add_extra_convs='on_input': P6 from C5
        in_channels = list(in_channels)
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs ({num_outs}) must be >= len(in_channels) ({len(in_channels)})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList(_conv(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(_conv(out_channels, out_channels, 3) for _ in in_channels)
        for i in range(num_outs - len(in_channels)):
            source = in_channels[-1] if extra_on_input and i == 0 else out_channels
            self.fpn_convs.append(_conv(source, out_channels, 3, stride=2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmdet's FPN init_cfg: Xavier uniform (gain 1), bias 0, on every Conv2d."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, gain=1.0)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        outs = [self.fpn_convs[i](lat) for i, lat in enumerate(laterals)]
        for i in range(len(laterals), self.num_outs):
            if i == len(laterals) and self.extra_on_input:
                source = feats[-1]
            else:
                source = F.relu(outs[-1]) if self.relu_before_extra_convs and i > len(laterals) else outs[-1]
            outs.append(self.fpn_convs[i](source))
        return outs
