"""The ATSS-family dense head: the ATSS baseline, GFL, and every mix the paper ablates.

One tower implementation serves all variants: per FPN level, a classification
tower and a regression tower of 4 × (3×3 conv, GroupNorm 32, ReLU), then

- a classification conv with C outputs (sigmoid per class);
- a regression conv with 4 outputs (Dirac delta: ATSS's ``(dx, dy, dw, dh)`` deltas from the
  anchor) or 4 × (n + 1) outputs (General distribution, Eq. 5), times a learnable per-level
  Scale;
- a quality conv with 1 output on the regression tower when quality is a separate branch.

What the configuration chooses (``RunConfig.quality`` / ``RunConfig.box``):

=================  =========================================  ====================================
quality            training                                   test score
=================  =========================================  ====================================
``joint``          QFL (Eq. 2) on the classification-IoU       σ (used directly, Fig. 1b)
                   score; target IoU(pred, GT) for positives,
                   0 for negatives
``centerness``     FL (Eq. 1) + BCE centerness branch          σ × centerness
``iou``            FL + BCE IoU branch, target IoU(pred, GT)   σ × IoU
``none``           FL only                                     σ
``*_guided``       FL whose positive terms are weighted by     σ
                   the (normalised, detached) quality
=================  =========================================  ====================================

Box loss (Eq. 11): GIoU, λ0 = ``box_loss_weight``; with the General distribution also DFL
(Eq. 6), λ1 = ``dfl_weight`` over the four sides. As in mmdetection, the box losses of each
positive are weighted by a quality: the max sigmoid class score (detached) for the joint
representation (GFLHead), the centerness / IoU target for a separate branch (ATSSHead), 1
otherwise; they are normalised by the sum of those weights (clamped to ≥ 1). Classification
and branch losses are normalised by the number of positives (each image counting at least 1,
as mmdet's sampler does; averaged over processes when distributed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from .assigner import atss_assign
from ..distributed import reduce_mean
from .box_ops import aligned_iou, bbox2distance, delta2bbox, distance2bbox
from .losses import (
    centerness_loss,
    centerness_target,
    dfl_target,
    distribution_focal_loss,
    focal_loss,
    giou_loss,
    integral,
    num_bins,
    quality_focal_loss,
)
from .priors import GFL_STRIDES, anchor_centers, grid_anchors

SEPARATE_BRANCHES = ("centerness", "iou")
GUIDED = ("centerness_guided", "iou_guided")


@dataclass(frozen=True)
class HeadConfig:
    num_classes: int
    quality: str = "joint"
    box: str = "general"
    reg_max: float = 16.0
    bin_width: float = 1.0
    in_channels: int = 256
    feat_channels: int = 256
    stacked_convs: int = 4
    norm_groups: int = 32
    strides: tuple[int, ...] = GFL_STRIDES
    anchor_scale: float = 8.0  # anchor side = 8 × stride
    atss_topk: int = 9
    qfl_beta: float = 2.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    box_loss_weight: float = 2.0
    dfl_weight: float = 0.25

    @property
    def bins(self) -> int:
        return num_bins(self.reg_max, self.bin_width)

    @property
    def reg_channels(self) -> int:
        return 4 * self.bins if self.box == "general" else 4


class Scale(nn.Module):
    """A learnable scalar multiplying one level's regression output (init 1)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def conv_tower(in_channels: int, channels: int, depth: int, groups: int, bias: bool = False) -> nn.Sequential:
    """depth × (3×3 conv, GroupNorm, ReLU), as mmdet's ConvModule with GN (no conv bias
    unless ``bias``, FCOS's ``conv_bias=True``)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=bias),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


@dataclass
class HeadOutputs:
    """Per-level raw outputs, each (B, ch, H_l, W_l)."""

    cls: list[Tensor]
    reg: list[Tensor]
    quality: list[Tensor] | None


@dataclass
class Targets:
    """Training targets of a batch, flattened over images and levels (B·A rows)."""

    labels: Tensor  # (B·A,) class index, num_classes = background
    label_weights: Tensor  # (B·A,)
    boxes: Tensor  # (B·A, 4) assigned GT box (valid where positive)
    anchors: Tensor  # (B·A, 4)
    strides: Tensor  # (B·A,)
    avg_factor: int  # Σ over images of max(positives, 1): mmdet's SamplingResult.avg_factor


class DenseHead(nn.Module):
    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        if cfg.box not in ("dirac", "general"):
            raise ValueError(f"box = {cfg.box!r} is not supported by the native engine yet (dirac, general)")
        self.cfg = cfg
        groups = min(cfg.norm_groups, cfg.feat_channels)
        self.cls_tower = conv_tower(cfg.in_channels, cfg.feat_channels, cfg.stacked_convs, groups)
        self.reg_tower = conv_tower(cfg.in_channels, cfg.feat_channels, cfg.stacked_convs, groups)
        self.cls_out = nn.Conv2d(cfg.feat_channels, cfg.num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(cfg.feat_channels, cfg.reg_channels, 3, padding=1)
        self.quality_out = nn.Conv2d(cfg.feat_channels, 1, 3, padding=1) if cfg.quality in SEPARATE_BRANCHES else None
        self.scales = nn.ModuleList(Scale(1.0) for _ in cfg.strides)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.01) for every conv, zero bias; class bias for prior 0.01 (focal-loss init)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))

    # ----------------------------------------------------------------------------- forward

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        cls, reg, quality = [], [], []
        for feat, scale in zip(feats, self.scales):
            cls_feat = self.cls_tower(feat)
            reg_feat = self.reg_tower(feat)
            cls.append(self.cls_out(cls_feat))
            reg.append(scale(self.reg_out(reg_feat)).float())
            if self.quality_out is not None:
                quality.append(self.quality_out(reg_feat))
        return HeadOutputs(cls, reg, quality if self.quality_out is not None else None)

    def anchors(self, outputs: HeadOutputs) -> list[Tensor]:
        sizes = [tuple(x.shape[-2:]) for x in outputs.cls]
        return grid_anchors(sizes, self.cfg.strides, self.cfg.anchor_scale, device=outputs.cls[0].device)

    # ----------------------------------------------------------------------------- targets

    @torch.no_grad()
    def targets(self, level_anchors: list[Tensor], gt: list[dict]) -> Targets:
        """ATSS assignment per image (every prior valid: all anchors lie on the padded batch)."""
        anchors = torch.cat(level_anchors)
        num_level = [len(a) for a in level_anchors]
        strides = torch.cat([a.new_full((len(a),), float(s)) for a, s in zip(level_anchors, self.cfg.strides)])
        C = self.cfg.num_classes
        labels, weights, boxes, avg_factor = [], [], [], 0
        for target in gt:
            gt_boxes = target["boxes"].to(anchors)
            gt_labels = target["labels"].to(anchors.device)
            result = atss_assign(anchors, num_level, gt_boxes, gt_labels, target.get("ignore_boxes"), self.cfg.atss_topk)
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
        return Targets(
            labels=torch.cat(labels),
            label_weights=torch.cat(weights),
            boxes=torch.cat(boxes),
            anchors=anchors.repeat(B, 1),
            strides=strides.repeat(B),
            avg_factor=avg_factor,
        )

    # ----------------------------------------------------------------------------- loss

    def loss(self, outputs: HeadOutputs, gt: list[dict]) -> dict[str, Tensor]:
        """The losses of Eq. 11 (or the ATSS baseline's), named as mmdetection names them."""
        cfg = self.cfg
        C = cfg.num_classes
        t = self.targets(self.anchors(outputs), gt)
        cls = _flatten(outputs.cls, C)
        reg = _flatten(outputs.reg, cfg.reg_channels)
        pos = torch.nonzero((t.labels >= 0) & (t.labels < C)).squeeze(1)
        num_pos = max(reduce_mean(float(t.avg_factor), cls.device), 1.0)

        pos_anchors, pos_strides, pos_gt = t.anchors[pos], t.strides[pos], t.boxes[pos]
        pos_reg = reg[pos]
        if cfg.box == "general":
            # Distances are learnt in stride units: decode from the anchor centre / stride.
            centers = anchor_centers(pos_anchors) / pos_strides[:, None]
            pred_boxes = distance2bbox(centers, integral(pos_reg, cfg.reg_max, cfg.bin_width))
            gt_boxes = pos_gt / pos_strides[:, None]
        else:
            pred_boxes = delta2bbox(pos_anchors, pos_reg)
            gt_boxes = pos_gt
        iou_target = aligned_iou(pred_boxes.detach(), gt_boxes).clamp(min=0)
        ctr_target = centerness_target(pos_anchors, pos_gt) if len(pos) else pos_gt.new_zeros(0)

        losses: dict[str, Tensor] = {}
        if cfg.quality == "joint":
            score = cls.new_zeros(len(cls))
            score[pos] = iou_target
            losses["loss_cls"] = quality_focal_loss(
                cls, t.labels, score, beta=cfg.qfl_beta, weight=t.label_weights, reduction="mean", avg_factor=num_pos
            )
        else:
            cls_weight = t.label_weights
            if cfg.quality in GUIDED and len(pos):
                cls_weight = cls_weight.clone()
                guide = iou_target if cfg.quality == "iou_guided" else ctr_target
                cls_weight[pos] = guide * len(pos) / guide.sum().clamp(min=1e-6)
            losses["loss_cls"] = focal_loss(
                cls, t.labels, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha,
                weight=cls_weight, reduction="mean", avg_factor=num_pos,
            )

        if cfg.quality == "joint":
            box_weight = cls.detach().sigmoid().max(dim=1).values[pos]
        elif cfg.quality == "centerness":
            box_weight = ctr_target
        elif cfg.quality == "iou":
            box_weight = iou_target
        else:
            box_weight = pos_gt.new_ones(len(pos))
        box_norm = max(reduce_mean(float(box_weight.sum()), cls.device), 1.0)

        if len(pos):
            losses["loss_bbox"] = cfg.box_loss_weight * giou_loss(
                pred_boxes, gt_boxes, weight=box_weight, reduction="mean", avg_factor=1.0
            ) / box_norm
        else:
            losses["loss_bbox"] = reg.sum() * 0
        if cfg.box == "general" and cfg.dfl_weight > 0:
            if len(pos):
                corners = dfl_target(
                    bbox2distance(centers, gt_boxes), cfg.reg_max, cfg.bin_width
                ).reshape(-1)
                losses["loss_dfl"] = cfg.dfl_weight * distribution_focal_loss(
                    pos_reg.reshape(-1, cfg.bins), corners,
                    weight=box_weight[:, None].expand(-1, 4).reshape(-1), reduction="mean", avg_factor=4.0,
                ) / box_norm
            else:
                losses["loss_dfl"] = reg.sum() * 0
        if cfg.quality in SEPARATE_BRANCHES:
            quality = _flatten(outputs.quality, 1).squeeze(1)
            name = "loss_centerness" if cfg.quality == "centerness" else "loss_iou"
            if len(pos):
                target = ctr_target if cfg.quality == "centerness" else iou_target
                losses[name] = centerness_loss(quality[pos], target, reduction="mean", avg_factor=num_pos)
            else:
                losses[name] = quality.sum() * 0
        return losses

    # ----------------------------------------------------------------------------- predict

    def decode(self, level: int, anchors: Tensor, reg: Tensor, img_shape: Sequence[int]) -> Tensor:
        """Boxes in input-image pixels for the given priors of one level."""
        if self.cfg.box == "general":
            stride = self.cfg.strides[level]
            return distance2bbox(anchor_centers(anchors), integral(reg, self.cfg.reg_max, self.cfg.bin_width) * stride, max_shape=img_shape)
        return delta2bbox(anchors, reg, max_shape=img_shape)



def _flatten(levels: list[Tensor], channels: int) -> Tensor:
    """[(B, ch, H, W)] → (B·A, ch) in (image, level, y, x) order, matching Targets."""
    B = levels[0].shape[0]
    per_image = torch.cat([x.permute(0, 2, 3, 1).reshape(B, -1, channels) for x in levels], dim=1)
    return per_image.reshape(-1, channels)
