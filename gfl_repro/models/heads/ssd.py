"""The SSD512 head (Liu et al., ECCV 2016; the paper's ref. [20]) as mmdetection 3.3's
``ssd512_coco`` builds it — Table 1(b).

Seven levels (VGG16's conv4_3 and fc7, then five extra layers: :mod:`gfl_repro.models.ssd_neck`);
per level one 3×3 conv for the classes and one for the boxes, no towers, Xavier init. Four
or six anchors per location (:func:`gfl_repro.models.priors.ssd_base_anchors`, sizes from 4 %
to 90 % of the input), at strides ``input / feature size`` (8 … 512 at 512 px). Max-IoU
assignment at 0.5 (every GT keeps its best anchor: :data:`~gfl_repro.models.assigners.max_iou.SSD`);
softmax cross-entropy over the classes and a background column with 3:1 hard negative mining
and Smooth L1 (β 1) on the deltas (stds 0.1, 0.1, 0.2, 0.2), both divided by Σ over images of
max(#positives, 1). "+ QFL" replaces the softmax by a sigmoid head trained with QFL (classes
only, no background column, the focal-loss init on its convs); everything else stays.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..assigners.max_iou import SSD, max_iou_assign
from ..priors import SSD_RATIOS, shift_anchors, ssd_base_anchors
from .anchor_based import MaxIoUHead
from .base import HeadOutputs, HeadSpec, Targets, stack_assignments

SSD512_CHANNELS = (512, 1024, 512, 256, 256, 256, 256)


class SSDHead(MaxIoUHead):
    uses_scales = False
    quality_weights_boxes = False
    strides: tuple[float, ...] = (8, 16, 32, 64, 128, 256, 512)

    def __init__(self, spec: HeadSpec, quality, box, in_channels: Sequence[int] = SSD512_CHANNELS,
                 input_size: int = 512) -> None:
        self.level_channels = tuple(in_channels)
        self.input_size = int(input_size)
        self.anchors_per_level = tuple(2 + 2 * len(r) for r in SSD_RATIOS)
        super().__init__(spec, quality, box)

    @classmethod
    def build(cls, config, spec, quality, box) -> "SSDHead":
        return cls(spec, quality, box, in_channels=spec.level_channels, input_size=int(config.image_scale[0]))

    def build_layers(self) -> None:
        self.cls_convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, a * self.cls_channels, 3, padding=1))
                                       for c, a in zip(self.level_channels, self.anchors_per_level))
        self.reg_convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, a * self.box.channels, 3, padding=1))
                                       for c, a in zip(self.level_channels, self.anchors_per_level))
        self.quality_out = None
        self.scales = None

    def init_weights(self) -> None:
        """Xavier uniform, bias 0 (mmdet's SSDHead); a sigmoid class head gets the focal-loss
        init instead (normal(0, 0.01), bias for prior 0.01), as every sigmoid dense head."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if not self.quality.softmax:
            for conv in self.cls_convs:
                nn.init.normal_(conv[0].weight, std=0.01)
                nn.init.constant_(conv[0].bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        cls = [conv(x) for conv, x in zip(self.cls_convs, feats)]
        reg = [self.box.activate(conv(x).float()) for conv, x in zip(self.reg_convs, feats)]
        return HeadOutputs(cls, reg, None)

    def make_priors(self, sizes, device) -> list[Tensor]:
        """Anchors at strides ``input / feature width``: 8, 16, …, 512 at 512 px, as mmdet's config."""
        strides = [self.input_size / w for _, w in sizes]
        return [shift_anchors(ssd_base_anchors(level, s, self.input_size), size, s, device=device)
                for level, (size, s) in enumerate(zip(sizes, strides))]

    @torch.no_grad()
    def assign(self, level_anchors: list[Tensor], gt: list[dict], sizes: list[tuple[int, int]]) -> Targets:
        anchors = torch.cat(level_anchors)
        assigned = [max_iou_assign(anchors, t["boxes"].to(anchors), SSD) for t in gt]
        return stack_assignments(assigned, gt, anchors, anchors.new_ones(len(anchors)), self.num_classes)


__all__ = ["SSD512_CHANNELS", "SSDHead"]
