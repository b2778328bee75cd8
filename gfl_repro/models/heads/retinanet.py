"""The RetinaNet head (Lin et al., ICCV 2017; the paper's ref. [18]) as mmdetection 3.3's
``retinanet_r50_fpn_1x_coco`` builds it — Table 1(b).

Nine anchors per location (3 scales per octave from 4 × stride, ratios 1:2, 1:1, 2:1,
:func:`gfl_repro.models.priors.retina_base_anchors`); towers of 4 × (3×3 conv with bias, ReLU)
without normalisation; no per-level scale. Max-IoU assignment (IoU >= 0.5 positive, < 0.4
negative, in between ignored, every GT keeps its best anchors:
:data:`gfl_repro.models.assigners.max_iou.RETINANET`); anchors outside an image's padded area
take no part (mmdet's valid flags). Focal loss (γ 2, α 0.25) and L1 on the
``(dx, dy, dw, dh)`` deltas (stds 1), both divided by Σ over images of max(#positives, 1). With
"+ QFL" only the classification loss and its score change: the box loss stays the detector's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..assigners.max_iou import RETINANET, max_iou_assign
from ..priors import retina_base_anchors, shift_anchors, valid_flags_single
from .anchor_based import MaxIoUHead
from .base import Targets, stack_assignments


class RetinaNetHead(MaxIoUHead):
    tower_norm = False
    uses_scales = False
    num_anchors = 9
    quality_weights_boxes = False
    octave_base_scale = 4.0

    def make_priors(self, sizes, device) -> list[Tensor]:
        return [shift_anchors(retina_base_anchors(s, self.octave_base_scale), size, s, device=device)
                for size, s in zip(sizes, self.strides)]

    def valid(self, sizes: list[tuple[int, int]], pad_shape, device) -> Tensor:
        """Anchors whose cell lies inside the image's padded area (mmdet ``valid_flags``)."""
        flags = []
        for (h, w), s in zip(sizes, self.strides):
            valid_h, valid_w = min(-(-int(pad_shape[0]) // s), h), min(-(-int(pad_shape[1]) // s), w)
            cells = valid_flags_single((h, w), (valid_h, valid_w), device=device)
            flags.append(cells[:, None].expand(-1, self.num_anchors).reshape(-1))
        return torch.cat(flags)

    @torch.no_grad()
    def assign(self, level_anchors: list[Tensor], gt: list[dict], sizes: list[tuple[int, int]]) -> Targets:
        anchors = torch.cat(level_anchors)
        strides = torch.cat([a.new_full((len(a),), float(s)) for a, s in zip(level_anchors, self.strides)])
        assigned = []
        for target in gt:
            pad = target.get("pad_shape", target.get("batch_input_shape"))
            valid = self.valid(sizes, pad, anchors.device) if pad is not None else None
            assigned.append(max_iou_assign(anchors, target["boxes"].to(anchors), RETINANET, valid=valid))
        return stack_assignments(assigned, gt, anchors, strides, self.num_classes)


__all__ = ["RetinaNetHead"]
