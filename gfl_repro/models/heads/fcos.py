"""The FCOS head of Tables 1a/2a: mmdetection's ``fcos_r50-caffe_fpn_gn-head-center-normbbox-
centeronreg-giou`` variant (the paper does not name its FCOS; this one's 38.7 AP in mmdet's zoo is
the closest to the paper's 38.5).

Points at the cell centres (:func:`gfl_repro.models.priors.points`); targets from FCOS's center
sampling and regress ranges (:mod:`gfl_repro.models.assigners.fcos`), flattened level-major
(level, image, y, x) as mmdet's FCOS does. The towers' convs carry a bias (``conv_bias=True``);
the quality branch sits on the regression tower (``centerness_on_reg``). Distances are
regressed in stride units (``norm_on_bbox``): a Dirac box's outputs are clamped at 0 and
multiplied by the stride at test time; the General and Gaussian boxes are distances in the same
units. Box losses compare boxes decoded from the pixel points with stride-unit distances, as
mmdet does (IoU is invariant to the shared translation). The classification loss is normalised
by the number of positives, the box losses by the sum of their weights clamped at 1e-6
(mmdet's FCOS ``centerness_denorm``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...distributed import reduce_mean
from ..assigners.fcos import REGRESS_RANGES, fcos_assign
from ..box_ops import distance2bbox
from ..box_representation import BoxNorm
from ..coders import Frame
from ..losses import centerness_from_distances
from ..priors import points as grid_points
from .base import DenseHead, Targets


class FCOSHead(DenseHead):
    conv_bias = True
    regress_ranges = REGRESS_RANGES
    center_sample_radius = 1.5

    def make_priors(self, sizes, device) -> list[Tensor]:
        return grid_points(sizes, self.strides, offset=0.5, device=device)

    @torch.no_grad()
    def assign(self, level_points: list[Tensor], gt: list[dict], sizes=None) -> Targets:
        """FCOS targets per image; ``Targets.boxes`` holds the distances to the GT in stride units."""
        num_level = [len(p) for p in level_points]
        points = torch.cat(level_points)
        per_image = [fcos_assign(points, num_level, self.strides, t["boxes"].to(points), t["labels"].to(points.device),
                                 self.num_classes, self.regress_ranges, self.center_sample_radius) for t in gt]
        B, L = len(gt), len(num_level)
        labels = torch.cat([torch.cat([lab.split(num_level)[lv] for lab, _ in per_image]) for lv in range(L)])
        distances = torch.cat([
            torch.cat([tg.split(num_level)[lv] for _, tg in per_image]) / self.strides[lv] for lv in range(L)
        ])
        strides = torch.cat([points.new_full((B * n,), float(s)) for n, s in zip(num_level, self.strides)])
        num_pos = ((labels >= 0) & (labels < self.num_classes)).sum()  # stays on the device
        return Targets(labels=labels, label_weights=None, priors=torch.cat([p.repeat(B, 1) for p in level_points]),
                       strides=strides, boxes=distances, cls_normaliser=num_pos)

    def flatten(self, levels: list[Tensor], channels: int) -> Tensor:
        """Level-major: (level, image, y, x), as mmdet's point heads flatten their targets."""
        return torch.cat([x.permute(0, 2, 3, 1).reshape(-1, channels) for x in levels])

    def frame(self, t: Targets, pos: Tensor) -> Frame:
        points, distances = t.priors[pos], t.boxes[pos]
        return Frame(target_boxes=distance2bbox(points, distances), origin=points, target_distances=distances)

    def centerness(self, t: Targets, pos: Tensor, frame: Frame) -> Tensor:
        """FCOS centerness of the stride-unit distances (mmdet ``FCOSHead.centerness_target``)."""
        return centerness_from_distances(frame.target_distances)

    def box_norm(self, weights: Tensor, t: Targets, x) -> BoxNorm:
        return BoxNorm(inside=reduce_mean(weights.sum().detach()).clamp(min=1e-6), after=1.0)

    def prior_centres(self, priors: Tensor) -> Tensor:
        return priors


__all__ = ["FCOSHead"]
