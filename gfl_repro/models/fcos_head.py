"""The FCOS head of Tables 1a/2a: mmdetection's ``fcos_r50-caffe_fpn_gn-head-center-normbbox-
centeronreg-giou`` variant (the paper does not name its FCOS; this one's 38.7 AP in mmdet's zoo is
the closest to the paper's 38.5).

Per level: the shared tower of :mod:`.head` (4 × conv3×3 with bias + GN + ReLU per branch), a
class conv, a 4-channel regression conv times a learnable Scale, clamped at 0 (``norm_on_bbox``:
distances in stride units, multiplied by the stride at test time), and a centerness conv on the
regression tower. Targets (FCOS): a point is positive for a GT when it lies inside the GT's
centre region of radius 1.5 strides (clipped to the box) and its largest distance to the box
sides falls in the level's regress range; among several GTs the smallest area wins. Losses: FL
over all points / #positives, GIoU weighted by the centerness targets / their sum, BCE on
centerness / #positives; test score = σ(cls) × σ(centerness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from .box_ops import distance2bbox
from ..distributed import reduce_mean
from .head import HeadOutputs, Scale, conv_tower
from .losses import centerness_from_distances, centerness_loss, focal_loss, giou_loss
from .priors import GFL_STRIDES
from .priors import points as grid_points

INF = 1e8
REGRESS_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))


@dataclass(frozen=True)
class FCOSConfig:
    num_classes: int
    in_channels: int = 256
    feat_channels: int = 256
    stacked_convs: int = 4
    norm_groups: int = 32
    strides: tuple[int, ...] = GFL_STRIDES
    regress_ranges: tuple[tuple[float, float], ...] = REGRESS_RANGES
    center_sample_radius: float = 1.5
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    box_loss_weight: float = 1.0


class FCOSHead(nn.Module):
    def __init__(self, cfg: FCOSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        groups = min(cfg.norm_groups, cfg.feat_channels)
        self.cls_tower = conv_tower(cfg.in_channels, cfg.feat_channels, cfg.stacked_convs, groups, bias=True)
        self.reg_tower = conv_tower(cfg.in_channels, cfg.feat_channels, cfg.stacked_convs, groups, bias=True)
        self.cls_out = nn.Conv2d(cfg.feat_channels, cfg.num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(cfg.feat_channels, 4, 3, padding=1)
        self.quality_out = nn.Conv2d(cfg.feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in cfg.strides)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        """Regression in stride units (≥ 0), as mmdet's FCOS with ``norm_on_bbox`` in training."""
        cls, reg, quality = [], [], []
        for feat, scale in zip(feats, self.scales):
            cls_feat, reg_feat = self.cls_tower(feat), self.reg_tower(feat)
            cls.append(self.cls_out(cls_feat))
            reg.append(scale(self.reg_out(reg_feat)).float().clamp(min=0))
            quality.append(self.quality_out(reg_feat))
        return HeadOutputs(cls, reg, quality)

    def points(self, outputs: HeadOutputs) -> list[Tensor]:
        sizes = [tuple(x.shape[-2:]) for x in outputs.cls]
        return grid_points(sizes, self.cfg.strides, offset=0.5, device=outputs.cls[0].device)

    @torch.no_grad()
    def targets_single(self, points: Tensor, num_level: list[int], gt_boxes: Tensor, gt_labels: Tensor):
        """(labels (P,), ltrb targets in pixels (P, 4)) for one image."""
        cfg = self.cfg
        P, G = len(points), len(gt_boxes)
        if G == 0:
            return torch.full((P,), cfg.num_classes, dtype=torch.long, device=points.device), points.new_zeros(P, 4)
        strides = torch.cat([points.new_full((n,), float(s)) for n, s in zip(num_level, cfg.strides)])
        ranges = torch.cat([points.new_tensor(r).expand(n, 2) for n, r in zip(num_level, cfg.regress_ranges)])
        xs, ys = points[:, 0, None], points[:, 1, None]
        boxes = gt_boxes[None].expand(P, G, 4)
        ltrb = torch.stack([xs - boxes[..., 0], ys - boxes[..., 1], boxes[..., 2] - xs, boxes[..., 3] - ys], -1)
        # centre sampling: the region of ±radius·stride around the GT centre, clipped to the GT
        cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
        r = (strides * cfg.center_sample_radius)[:, None]
        x0 = torch.where(cx - r > boxes[..., 0], cx - r, boxes[..., 0])
        y0 = torch.where(cy - r > boxes[..., 1], cy - r, boxes[..., 1])
        x1 = torch.where(cx + r > boxes[..., 2], boxes[..., 2], cx + r)
        y1 = torch.where(cy + r > boxes[..., 3], boxes[..., 3], cy + r)
        inside = torch.stack([xs - x0, ys - y0, x1 - xs, y1 - ys], -1).min(-1).values > 0
        reach = ltrb.max(-1).values
        in_range = (reach >= ranges[:, None, 0]) & (reach <= ranges[:, None, 1])
        areas = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))[None].repeat(P, 1)
        areas[~inside] = INF
        areas[~in_range] = INF
        min_area, index = areas.min(dim=1)
        labels = gt_labels[index].clone()
        labels[min_area == INF] = cfg.num_classes
        return labels, ltrb[torch.arange(P, device=points.device), index]

    def loss(self, outputs: HeadOutputs, gt: list[dict]) -> dict[str, Tensor]:
        cfg = self.cfg
        C = cfg.num_classes
        level_points = self.points(outputs)
        num_level = [len(p) for p in level_points]
        points = torch.cat(level_points)
        per_image = [self.targets_single(points, num_level, t["boxes"].to(points), t["labels"].to(points.device))
                     for t in gt]
        B = len(gt)
        # mmdet's flattening: level-major, then image, then position
        labels = torch.cat([torch.cat([lab.split(num_level)[lv] for lab, _ in per_image]) for lv in range(len(num_level))])
        targets = torch.cat([
            torch.cat([tg.split(num_level)[lv] for _, tg in per_image]) / cfg.strides[lv] for lv in range(len(num_level))
        ])
        flat_points = torch.cat([p.repeat(B, 1) for p in level_points])
        cls = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, C) for x in outputs.cls])
        reg = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, 4) for x in outputs.reg])
        ctr = torch.cat([x.permute(0, 2, 3, 1).reshape(-1) for x in outputs.quality])

        pos = torch.nonzero((labels >= 0) & (labels < C)).reshape(-1)
        num_pos = max(reduce_mean(float(len(pos)), cls.device), 1.0)
        losses = {"loss_cls": focal_loss(cls, labels, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha,
                                         reduction="mean", avg_factor=num_pos)}
        pos_reg, pos_ctr, pos_targets = reg[pos], ctr[pos], targets[pos]
        ctr_targets = centerness_from_distances(pos_targets)
        denorm = max(reduce_mean(float(ctr_targets.sum()), cls.device), 1e-6)
        if len(pos):
            # as mmdet: both boxes decode stride-unit distances from pixel points (GIoU is what matters)
            pos_points = flat_points[pos]
            losses["loss_bbox"] = cfg.box_loss_weight * giou_loss(
                distance2bbox(pos_points, pos_reg), distance2bbox(pos_points, pos_targets),
                weight=ctr_targets, reduction="mean", avg_factor=denorm)
            losses["loss_centerness"] = centerness_loss(pos_ctr, ctr_targets, reduction="mean", avg_factor=num_pos)
        else:
            losses["loss_bbox"] = pos_reg.sum()
            losses["loss_centerness"] = pos_ctr.sum()
        return losses

    # test time ---------------------------------------------------------------------------

    def anchors(self, outputs: HeadOutputs) -> list[Tensor]:
        """The priors of each level (points for FCOS), for the detector's predict loop."""
        return self.points(outputs)

    def decode(self, level: int, points: Tensor, reg: Tensor, img_shape: Sequence[int]) -> Tensor:
        return distance2bbox(points, reg * self.cfg.strides[level], max_shape=img_shape)
