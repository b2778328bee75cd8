"""The ATSS head (Zhang et al., CVPR 2020; the paper's ref. [31]) and everything the paper
builds on it: ATSS, GFL and the mixes of Tables 1a, 1c, 2a, 2b, 2c and 3.

One square anchor per location, side 8 × stride (mmdet's ``octave_base_scale = 8``), used by
the ATSS assigner (:mod:`gfl_repro.models.assigners.atss`). Targets are flattened image-major
(image, level, y, x), as mmdet's ATSS/GFL heads concatenate them. A Dirac box is encoded as
``(dx, dy, dw, dh)`` deltas from the anchor with stds (0.1, 0.1, 0.2, 0.2), decoded to pixels
(mmdet's ``DeltaXYWHBBoxCoder``); the General and Gaussian boxes are distances from the anchor
centre in stride units, and their losses compare boxes in stride units (GFLHead). Box losses
are normalised by the process-averaged sum of the positives' box weights, clamped at 1, after
the loss weight (mmdet's ATSS and GFL heads). The classification loss is normalised by
Σ over images of max(#positives, 1) (mmdet's sampler ``avg_factor``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...distributed import reduce_mean
from ..assigners.atss import atss_assign
from ..box_ops import bbox2distance
from ..box_representation import BoxNorm
from ..coders import Frame
from ..losses import centerness_target
from ..priors import anchor_centers, grid_anchors
from .base import DenseHead, Targets


class ATSSHead(DenseHead):
    anchor_scale = 8.0  # anchor side = 8 × stride

    def __init__(self, spec, quality, box, atss_topk: int = 9, tower_norm: bool | None = None) -> None:
        super().__init__(spec, quality, box, tower_norm)
        self.atss_topk = atss_topk

    @classmethod
    def build(cls, config, spec, quality, box) -> "ATSSHead":
        return cls(spec, quality, box, atss_topk=config.atss_topk)

    def make_priors(self, sizes, device) -> list[Tensor]:
        return grid_anchors(sizes, self.strides, self.anchor_scale, device=device)

    @torch.no_grad()
    def assign(self, level_anchors: list[Tensor], gt: list[dict], sizes=None) -> Targets:
        """ATSS assignment per image (every prior valid: all anchors lie on the padded batch)."""
        anchors = torch.cat(level_anchors)
        num_level = [len(a) for a in level_anchors]
        strides = torch.cat([a.new_full((len(a),), float(s)) for a, s in zip(level_anchors, self.strides)])
        C = self.num_classes
        labels, weights, boxes, avg_factor = [], [], [], 0
        for target in gt:
            gt_boxes = target["boxes"].to(anchors)
            gt_labels = target["labels"].to(anchors.device)
            result = atss_assign(anchors, num_level, gt_boxes, gt_labels, target.get("ignore_boxes"), self.atss_topk)
            inds = result.assigned_gt_inds
            pos = inds > 0
            lab = torch.full((len(anchors),), C, dtype=torch.long, device=anchors.device)
            box = anchors.new_zeros(len(anchors), 4)
            if pos.any():
                lab[pos] = gt_labels[inds[pos] - 1]
                box[pos] = gt_boxes[inds[pos] - 1]
            avg_factor += max(int(pos.sum()), 1)
            labels.append(lab)
            weights.append((inds >= 0).to(anchors.dtype))  # ignored priors (-1) get no loss
            boxes.append(box)
        B = len(gt)
        return Targets(labels=torch.cat(labels), label_weights=torch.cat(weights), priors=anchors.repeat(B, 1),
                       strides=strides.repeat(B), boxes=torch.cat(boxes), cls_normaliser=avg_factor)

    def flatten(self, levels: list[Tensor], channels: int) -> Tensor:
        """Image-major: (image, level, y, x)."""
        B = levels[0].shape[0]
        per_image = torch.cat([x.permute(0, 2, 3, 1).reshape(B, -1, channels) for x in levels], dim=1)
        return per_image.reshape(-1, channels)

    def frame(self, t: Targets, pos: Tensor) -> Frame:
        anchors, gt = t.priors[pos], t.boxes[pos]
        if self.box.coder.name == "delta":
            return Frame(target_boxes=gt, anchors=anchors)
        strides = t.strides[pos][:, None]
        origin = anchor_centers(anchors) / strides
        target_boxes = gt / strides
        return Frame(target_boxes=target_boxes, origin=origin, target_distances=bbox2distance(origin, target_boxes))

    def centerness(self, t: Targets, pos: Tensor, frame: Frame) -> Tensor:
        """Centerness of the anchor centre in its GT box, in pixels (mmdet ``ATSSHead.centerness_target``)."""
        return centerness_target(t.priors[pos], t.boxes[pos])

    def box_norm(self, weights: Tensor, t: Targets, x) -> BoxNorm:
        return BoxNorm(inside=1.0, after=max(reduce_mean(float(weights.sum()), weights.device), 1.0))

    def prior_centres(self, priors: Tensor) -> Tensor:
        return anchor_centers(priors)


__all__ = ["ATSSHead"]
