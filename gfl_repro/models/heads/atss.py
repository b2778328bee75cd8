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
from ..box_representation import BoxNorm
from ..priors import grid_anchors
from .anchor_based import AnchorBasedHead
from .base import Targets, stack_assignments


class ATSSHead(AnchorBasedHead):
    anchor_scale = 8.0  # anchor side = 8 × stride

    def __init__(self, spec, quality, box, atss_topk: int = 9, tower_norm: bool | None = None) -> None:
        super().__init__(spec, quality, box, tower_norm)
        self.atss_topk = atss_topk

    @classmethod
    def build(cls, config, spec, quality, box) -> "ATSSHead":
        return cls(spec, quality, box, atss_topk=config.atss_topk, tower_norm=True if config.norm == "gn" else None)

    def make_priors(self, sizes, device) -> list[Tensor]:
        return grid_anchors(sizes, self.strides, self.anchor_scale, device=device)

    @torch.no_grad()
    def assign(self, level_anchors: list[Tensor], gt: list[dict], sizes=None) -> Targets:
        """ATSS assignment per image (every prior valid: all anchors lie on the padded batch)."""
        anchors = torch.cat(level_anchors)
        num_level = [len(a) for a in level_anchors]
        strides = torch.cat([a.new_full((len(a),), float(s)) for a, s in zip(level_anchors, self.strides)])
        assigned = [atss_assign(anchors, num_level, t["boxes"].to(anchors), t["labels"].to(anchors.device),
                                t.get("ignore_boxes"), self.atss_topk).assigned_gt_inds for t in gt]
        return stack_assignments(assigned, gt, anchors, strides, self.num_classes)

    def box_norm(self, weights: Tensor, t: Targets, x) -> BoxNorm:
        return BoxNorm(inside=1.0, after=reduce_mean(weights.sum().detach()).clamp(min=1.0))


__all__ = ["ATSSHead"]
