"""The FoveaBox head (Kong et al., the paper's ref. [13]) as mmdetection 3.3's
``fovea_r50_fpn_4xb4-1x_coco`` builds it — Table 1(b).

One point per location at the cell centre; towers of 4 × (3×3 conv with bias, ReLU) without
normalisation; no per-level scale. Targets from the fovea of each GT on the levels whose
scale range holds it (:mod:`gfl_repro.models.assigners.fovea`), flattened level-major
(level, image, y, x). Focal loss (γ 1.5, α 0.4) divided by #positives + #images; Smooth L1
(β 0.11) on the log-space side distances divided by #positives. Test: boxes decoded with the
level's base edge and clipped to ``[0, W − 1] × [0, H − 1]``, no minimum box size (mmdet's
FoveaHead). With "+ QFL" only the classification loss and its score change.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..assigners.fovea import BASE_EDGES, fovea_assign
from ..box_representation import BoxNorm
from ..coders import Frame
from ..device_constants import constant
from ..losses import centerness_target
from ..priors import points as grid_points
from .base import DenseHead, Targets


class FoveaBoxHead(DenseHead):
    tower_norm = False
    uses_scales = False
    quality_weights_boxes = False
    base_edges = BASE_EDGES

    def make_priors(self, sizes, device) -> list[Tensor]:
        return grid_points(sizes, self.strides, offset=0.5, device=device)

    @torch.no_grad()
    def assign(self, level_points: list[Tensor], gt: list[dict], sizes: list[tuple[int, int]]) -> Targets:
        C, B, L = self.num_classes, len(gt), len(level_points)
        per_image = [fovea_assign(level_points, sizes, self.strides, t["boxes"].to(level_points[0]),
                                  t["labels"].to(level_points[0].device), C, self.base_edges) for t in gt]

        def level_major(k: int) -> Tensor:
            return torch.cat([torch.cat([per_image[b][lv][k] for b in range(B)]) for lv in range(L)])

        labels = level_major(0)
        num_pos = ((labels >= 0) & (labels < C)).sum()  # stays on the device
        return Targets(
            labels=labels, label_weights=None,
            priors=torch.cat([p.repeat(B, 1) for p in level_points]),
            strides=torch.cat([p.new_full((B * len(p),), float(s)) for p, s in zip(level_points, self.strides)]),
            boxes=level_major(2), cls_normaliser=num_pos + B, num_images=B, encoded=level_major(1))

    def flatten(self, levels: list[Tensor], channels: int) -> Tensor:
        """Level-major: (level, image, y, x), as mmdet's point heads flatten their targets."""
        return torch.cat([x.permute(0, 2, 3, 1).reshape(-1, channels) for x in levels])

    def frame(self, t: Targets, pos: Tensor) -> Frame:
        strides = t.strides[pos]
        level = (strides[:, None] == constant(self.strides, strides)).to(torch.uint8).argmax(dim=1)
        scales = constant(self.base_edges, strides)[level]  # each positive's base edge
        return Frame(target_boxes=t.boxes[pos], origin=t.priors[pos], scales=scales, target_encoded=t.encoded[pos])

    def centerness(self, t: Targets, pos: Tensor, frame: Frame) -> Tensor:
        return centerness_target(t.priors[pos], t.boxes[pos])

    def cls_avg_factor(self, t: Targets) -> Tensor:
        """#positives + #images (mmdet's FoveaHead), not averaged over processes."""
        return t.cls_normaliser.float()

    def box_norm(self, weights: Tensor, t: Targets, x) -> BoxNorm:
        return BoxNorm(inside=float(len(weights)), after=1.0)

    def prior_centres(self, priors: Tensor) -> Tensor:
        return priors


__all__ = ["FoveaBoxHead"]
