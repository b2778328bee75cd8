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
from ..box_representation import BoxNorm
from ..coders import Frame
from ..losses import centerness_target
from ..priors import anchor_centers, retina_base_anchors, shift_anchors, valid_flags_single
from .base import DenseHead, Targets


class RetinaNetHead(DenseHead):
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
        C = self.num_classes
        labels, weights, boxes, avg_factor = [], [], [], 0
        for target in gt:
            gt_boxes = target["boxes"].to(anchors)
            gt_labels = target["labels"].to(anchors.device)
            pad = target.get("pad_shape", target.get("batch_input_shape"))
            valid = self.valid(sizes, pad, anchors.device) if pad is not None else torch.ones_like(strides, dtype=torch.bool)
            inds = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
            inds[valid] = max_iou_assign(anchors[valid], gt_boxes, RETINANET)
            pos = inds > 0
            lab = torch.full((len(anchors),), C, dtype=torch.long, device=anchors.device)
            box = anchors.new_zeros(len(anchors), 4)
            if pos.any():
                lab[pos] = gt_labels[inds[pos] - 1]
                box[pos] = gt_boxes[inds[pos] - 1]
            avg_factor += max(int(pos.sum()), 1)
            labels.append(lab)
            weights.append((inds >= 0).to(anchors.dtype))
            boxes.append(box)
        B = len(gt)
        return Targets(labels=torch.cat(labels), label_weights=torch.cat(weights), priors=anchors.repeat(B, 1),
                       strides=strides.repeat(B), boxes=torch.cat(boxes), cls_normaliser=avg_factor, num_images=B)

    def flatten(self, levels: list[Tensor], channels: int) -> Tensor:
        """Image-major: (image, level, y, x, anchor)."""
        B = levels[0].shape[0]
        return torch.cat([x.permute(0, 2, 3, 1).reshape(B, -1, channels) for x in levels], dim=1).reshape(-1, channels)

    def frame(self, t: Targets, pos: Tensor) -> Frame:
        return Frame(target_boxes=t.boxes[pos], anchors=t.priors[pos])

    def centerness(self, t: Targets, pos: Tensor, frame: Frame) -> Tensor:
        return centerness_target(t.priors[pos], t.boxes[pos])

    def cls_avg_factor(self, t: Targets) -> float:
        """Σ over images of max(#positives, 1), not averaged over processes (mmdet's AnchorHead)."""
        return float(t.cls_normaliser)

    def box_norm(self, weights: Tensor, t: Targets, x) -> BoxNorm:
        return BoxNorm(inside=x.num_pos, after=1.0)

    def prior_centres(self, priors: Tensor) -> Tensor:
        return anchor_centers(priors)


__all__ = ["RetinaNetHead"]
